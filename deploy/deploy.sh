#!/usr/bin/env bash
# deploy.sh — one-click deployment of bankcore with Docker Compose (seed §6.1, done right).
#
# Differences from the seed's script, on purpose:
#   - never pipes a download into sudo: missing prerequisites are reported with what to install;
#   - uses `docker compose` (v2 plugin), not the retired `docker-compose` v1, and checks the
#     versions the specification requires (Docker Engine 20.10+, Compose 2.0+), not only presence;
#   - asks for the public host name (--host), which nginx, the certificate, ALLOWED_HOSTS and
#     CSRF_TRUSTED_ORIGINS then use (the seed's certificate said CN=localhost);
#   - creates no superuser as "the first teller": a superuser has no role (audit/roles.py); the
#     first staff are created in their role with `manage.py create_staff` (docs/operations.md);
#   - writes .env with random secrets on the first run only, and never overwrites it;
#   - makes a self-signed certificate only when deploy/nginx/ssl has none;
#   - waits for health checks with a bounded timeout instead of `sleep 30`;
#   - migrates every database (control plane and each ledger) through the `migrate` service.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SECRET_VARS=(SECRET_KEY JWT_SECRET_KEY AUDIT_CHAIN_KEY MYSQL_ROOT_PASSWORD DB1_PASSWORD DB2_PASSWORD
    DB_MIGRATE_PASSWORD REDIS_PASSWORD MYSQL_EXPORTER_PASSWORD GRAFANA_ADMIN_PASSWORD ELASTIC_PASSWORD
    KIBANA_SYSTEM_PASSWORD)
SSL_DIR="deploy/nginx/ssl"
BUILD=1
HOST=""
INSTALL_BACKUP_TIMER=0
# What docs/operations.md and the specification (§1.2) require.
DOCKER_MIN_VERSION=20.10
COMPOSE_MIN_VERSION=2.0

usage() {
    cat <<'USAGE'
Usage: deploy/deploy.sh [--host NAME] [--no-build] [--install-backup-timer] [--help]

Deploys bankcore with Docker Compose from the repository root:
  1. checks prerequisites (Docker Engine 20.10+, Docker Compose 2.0+, openssl);
  2. creates .env from .env.example with random secrets (first run only, never overwritten);
     --host NAME records SERVER_NAME=NAME in it (nginx server_name, ALLOWED_HOSTS,
     CSRF_TRUSTED_ORIGINS);
  3. creates a self-signed TLS certificate for SERVER_NAME in deploy/nginx/ssl if none is present
     (or replaces a self-signed one that does not name SERVER_NAME; a real one is never touched);
  4. builds the application image (skipped with --no-build);
  5. starts MySQL and Redis, waits until healthy, creates the metrics user for mysqld-exporter;
  6. migrates the control plane and every ledger (the `migrate` service);
  7. starts everything, waits until every service is healthy, prints the URLs.

Options:
  --host NAME             the public host name (e.g. bank.example.com), saved as SERVER_NAME
  --no-build              use the existing image instead of building it
  --install-backup-timer  install the systemd timer that runs deploy/backup.sh --scheduled
                          daily (deploy/systemd/; needs root or sudo)
  -h, --help              show this help

Environment (or .env): DEPLOY_TIMEOUT (seconds to wait for health, default 300), HTTPS_PORT,
GRAFANA_PORT, PROMETHEUS_PORT, COMPOSE_FILE (e.g. docker-compose.yml:docker-compose.scale.yml).
USAGE
}

log() { printf '==> %s\n' "$*"; }
die() { printf 'deploy.sh: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=SCRIPTDIR/lib.sh
source "$ROOT/deploy/lib.sh"

check_prerequisites() {
    local missing=0
    log "Checking prerequisites"
    if ! command -v docker >/dev/null 2>&1; then
        cat >&2 <<'MSG'
  - Docker Engine 20.10+ is not installed. On Ubuntu, install it from Docker's apt repository
    (https://docs.docker.com/engine/install/ubuntu/): packages docker-ce, docker-ce-cli,
    containerd.io and docker-compose-plugin. Then: sudo usermod -aG docker "$USER" and log in again.
MSG
        missing=1
    else
        local docker_version compose_version
        docker_version=$(docker version --format '{{.Server.Version}}' 2>/dev/null ||
            docker version --format '{{.Client.Version}}' 2>/dev/null || true)
        if ! version_at_least "$docker_version" "$DOCKER_MIN_VERSION"; then
            printf '  - Docker Engine %s is too old (or unknown): %s or later is required.\n' \
                "${docker_version:-?}" "$DOCKER_MIN_VERSION" >&2
            missing=1
        fi
        compose_version=$(docker compose version --short 2>/dev/null || true)
        if [[ -n $compose_version ]] && ! version_at_least "$compose_version" "$COMPOSE_MIN_VERSION"; then
            printf '  - Docker Compose %s is too old: %s or later is required.\n' \
                "$compose_version" "$COMPOSE_MIN_VERSION" >&2
            missing=1
        fi
        if [[ -z $compose_version ]]; then
            cat >&2 <<'MSG'
  - Docker Compose v2 is not available as `docker compose`. Install the plugin:
    sudo apt-get install docker-compose-plugin   (from Docker's apt repository)
    The old standalone `docker-compose` v1 is not supported.
MSG
            missing=1
        fi
        if ! docker info >/dev/null 2>&1; then
            cat >&2 <<'MSG'
  - Cannot talk to the Docker daemon. Start it (sudo systemctl start docker) and make sure your
    user may use it (member of the `docker` group, then log in again).
MSG
            missing=1
        fi
    fi
    if ! command -v openssl >/dev/null 2>&1; then
        printf '  - openssl is not installed: sudo apt-get install openssl\n' >&2
        missing=1
    fi
    if ((missing)); then
        die "missing prerequisites (see above); nothing was changed"
    fi
}

is_secret() {
    local candidate
    for candidate in "${SECRET_VARS[@]}"; do
        [[ $candidate == "$1" ]] && return 0
    done
    return 1
}

write_env() {
    local name
    if [[ -f .env ]]; then
        log ".env exists: keeping it (delete it yourself to regenerate secrets)"
        # A secret this version introduced (ELASTIC_PASSWORD …) is added; none is ever replaced.
        for name in "${SECRET_VARS[@]}"; do
            if [[ -z $(env_value "$name") ]]; then
                env_file_set "$name" "$(openssl rand -hex 32)"
                log "Added the new secret $name to .env"
            fi
        done
        return
    fi
    [[ -f .env.example ]] || die ".env.example not found in $ROOT"
    log "Creating .env with random secrets"
    local tmp line name
    tmp=$(mktemp .env.XXXXXX)
    chmod 600 "$tmp"
    while IFS= read -r line || [[ -n $line ]]; do
        name=${line%%=*}
        if [[ $line == "$name=" ]] && is_secret "$name"; then
            printf '%s=%s\n' "$name" "$(openssl rand -hex 32)"
        else
            printf '%s\n' "$line"
        fi
    done <.env.example >"$tmp"
    mv "$tmp" .env
    log ".env written (mode 600). Keep it safe: it holds every password of this deployment."
}

# record_host: --host NAME into .env (SERVER_NAME), and into ALLOWED_HOSTS and
# CSRF_TRUSTED_ORIGINS when .env sets them explicitly (empty, compose derives them from it).
record_host() {
    local allowed origins port origin
    [[ -n $HOST ]] || return 0
    log "Host name: $HOST (SERVER_NAME in .env)"
    env_file_set SERVER_NAME "$HOST"
    allowed=$(env_value ALLOWED_HOSTS)
    if [[ -n $allowed && ,$allowed, != *",$HOST,"* ]]; then
        env_file_set ALLOWED_HOSTS "$HOST,$allowed"
        log "ALLOWED_HOSTS in .env now starts with $HOST"
    fi
    origins=$(env_value CSRF_TRUSTED_ORIGINS)
    port=$(env_value HTTPS_PORT 443)
    origin="https://$HOST"
    [[ $port == 443 ]] || origin="$origin:$port"
    if [[ -n $origins && ,$origins, != *",$origin,"* ]]; then
        env_file_set CSRF_TRUSTED_ORIGINS "$origin,$origins"
        log "CSRF_TRUSTED_ORIGINS in .env now starts with $origin"
    fi
}

# self_signed_certificate NAME: a new self-signed certificate for NAME (and localhost, 127.0.0.1).
self_signed_certificate() {
    local name=$1 san="DNS:$1,DNS:localhost,IP:127.0.0.1"
    [[ $name == localhost ]] && san="DNS:localhost,IP:127.0.0.1"
    mkdir -p "$SSL_DIR"
    (
        umask 077
        openssl req -x509 -nodes -newkey rsa:2048 -days 365 \
            -keyout "$SSL_DIR/banking.key.new" -out "$SSL_DIR/banking.crt.new" \
            -subj "/CN=$name" -addext "subjectAltName=$san" 2>/dev/null
    )
    chmod 644 "$SSL_DIR/banking.crt.new"
    mv "$SSL_DIR/banking.key.new" "$SSL_DIR/banking.key"
    mv "$SSL_DIR/banking.crt.new" "$SSL_DIR/banking.crt"
}

ensure_certificate() {
    local name subject issuer
    name=$(env_value SERVER_NAME localhost)
    if [[ -s $SSL_DIR/banking.crt && -s $SSL_DIR/banking.key ]]; then
        if openssl x509 -in "$SSL_DIR/banking.crt" -noout -checkhost "$name" 2>/dev/null | grep -q ' does match'; then
            log "TLS certificate for $name found in $SSL_DIR"
            return
        fi
        subject=$(openssl x509 -in "$SSL_DIR/banking.crt" -noout -subject -nameopt compat)
        issuer=$(openssl x509 -in "$SSL_DIR/banking.crt" -noout -issuer -nameopt compat)
        if [[ ${subject#subject=} != "${issuer#issuer=}" ]]; then
            die "$SSL_DIR/banking.crt does not name $name and is not self-signed: replace it with a certificate for $name (docs/operations.md \"Host name and certificate\")"
        fi
        log "The self-signed certificate in $SSL_DIR does not name $name: replacing it"
    else
        log "No TLS certificate in $SSL_DIR: creating a self-signed one for $name"
    fi
    self_signed_certificate "$name"
    log "Browsers warn about a self-signed certificate: bring a real one (docs/operations.md \"Host name and certificate\")."
}

# The systemd timer that runs the scheduled backup (deploy/systemd/), with this checkout's path.
install_backup_timer() {
    local sudo="" unit
    if ! command -v systemctl >/dev/null 2>&1; then
        log "systemctl not found: schedule deploy/backup.sh --scheduled yourself (docs/operations.md \"Backups\")"
        return 0
    fi
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "--install-backup-timer needs root or sudo"
        sudo=sudo
    fi
    for unit in bankcore-backup.service bankcore-backup.timer; do
        sed "s#@ROOT@#$ROOT#g" "deploy/systemd/$unit" | $sudo tee "/etc/systemd/system/$unit" >/dev/null
    done
    $sudo systemctl daemon-reload
    $sudo systemctl enable --now bankcore-backup.timer
    log "Backup timer installed: systemctl list-timers bankcore-backup.timer"
}

# wait_healthy SERVICE...: every container of every service healthy (or running when it has no
# health check), within DEPLOY_TIMEOUT seconds.
wait_healthy() {
    local timeout deadline service id state ids pending
    timeout=$(env_value DEPLOY_TIMEOUT 300)
    deadline=$((SECONDS + timeout))
    log "Waiting up to ${timeout}s for: $*"
    while :; do
        pending=()
        for service in "$@"; do
            ids=$(docker compose ps --all -q "$service" 2>/dev/null || true)
            if [[ -z $ids ]]; then
                pending+=("$service:not-started")
                continue
            fi
            for id in $ids; do
                state=$(container_state "$id")
                case $state in
                    healthy | running) ;;
                    exited | dead)
                        docker compose logs --tail 50 "$service" >&2 || true
                        die "$service stopped ($state); its last log lines are above"
                        ;;
                    *) pending+=("$service:$state") ;;
                esac
            done
        done
        if ((${#pending[@]} == 0)); then
            log "Healthy: $*"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            docker compose ps >&2 || true
            die "timed out after ${timeout}s waiting for: ${pending[*]}"
        fi
        sleep 3
    done
}

# The exporter's MySQL user needs a password from .env, which an init .sql cannot read; created
# here (idempotently) with the least privileges mysqld-exporter's default collectors need.
ensure_exporter_user() {
    local password service
    password=$(env_value MYSQL_EXPORTER_PASSWORD)
    [[ $password =~ ^[A-Za-z0-9]+$ ]] || die "MYSQL_EXPORTER_PASSWORD in .env must be non-empty and alphanumeric"
    for service in bank-db1 bank-db2; do
        log "Ensuring the mysqld-exporter user on $service"
        docker compose exec -T "$service" sh -c 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec mysql -uroot --batch' <<SQL
CREATE USER IF NOT EXISTS 'exporter'@'%' IDENTIFIED BY '${password}' WITH MAX_USER_CONNECTIONS 3;
ALTER USER 'exporter'@'%' IDENTIFIED BY '${password}' WITH MAX_USER_CONNECTIONS 3;
GRANT PROCESS, REPLICATION CLIENT ON *.* TO 'exporter'@'%';
GRANT SELECT ON performance_schema.* TO 'exporter'@'%';
SQL
    done
}

check_https() {
    local port url deadline
    port=$(env_value HTTPS_PORT 443)
    url="https://localhost:${port}/health"
    if ! command -v curl >/dev/null 2>&1; then
        log "curl not installed: skipping the end-to-end check of $url (nginx's health check passed)"
        return 0
    fi
    deadline=$((SECONDS + 60))
    until curl --silent --fail --insecure --max-time 5 --output /dev/null "$url"; do
        ((SECONDS < deadline)) || die "$url does not answer through nginx"
        sleep 2
    done
    log "End to end: $url answers through nginx"
}

print_urls() {
    local https_port grafana_port prometheus_port alertmanager_port app_url
    https_port=$(env_value HTTPS_PORT 443)
    grafana_port=$(env_value GRAFANA_PORT 3000)
    prometheus_port=$(env_value PROMETHEUS_PORT 9090)
    alertmanager_port=$(env_value ALERTMANAGER_PORT 9093)
    app_url="https://$(env_value SERVER_NAME localhost)"
    [[ $https_port == 443 ]] || app_url="${app_url}:${https_port}"
    cat <<URLS

=== bankcore is up ===
  Application (admin at /admin/):  ${app_url}
  Grafana (loopback only):         http://localhost:${grafana_port}  (user $(env_value GRAFANA_ADMIN_USER admin), password GRAFANA_ADMIN_PASSWORD in .env)
  Prometheus (loopback only):      http://localhost:${prometheus_port}
  Alertmanager (loopback only):    http://localhost:${alertmanager_port}  (receivers: ALERT_EMAIL_TO / ALERT_WEBHOOK_URL in .env)
  Log aggregation (optional):      docker compose --profile logging up -d  (Kibana on 127.0.0.1:5601)

  First staff (in a role; a superuser is not a teller):
      docker compose exec banking-app python manage.py create_staff alice --role teller
  First partner:            docker compose exec banking-app python manage.py partner_create NAME
  Walkthrough:              docs/operations.md
  Status / logs:            docker compose ps / docker compose logs -f banking-app
  Backup / update:          deploy/backup.sh / deploy/update.sh
  Stop:                     docker compose down   (data stays in the named volumes)
URLS
}

main() {
    while (($#)); do
        case $1 in
            --no-build) BUILD=0 ;;
            --install-backup-timer) INSTALL_BACKUP_TIMER=1 ;;
            --host)
                (($# >= 2)) || die "--host needs a host name"
                HOST=$2
                valid_host_name "$HOST" || die "--host '$HOST' is not a host name (letters, digits, hyphens and dots)"
                shift
                ;;
            --host=*)
                HOST=${1#--host=}
                valid_host_name "$HOST" || die "--host '$HOST' is not a host name (letters, digits, hyphens and dots)"
                ;;
            -h | --help)
                usage
                exit 0
                ;;
            *)
                usage >&2
                die "unknown option: $1"
                ;;
        esac
        shift
    done

    echo "=== bankcore deployment ==="
    check_prerequisites
    write_env
    record_host
    ensure_certificate
    # mysqld silently ignores a world-writable option file.
    chmod go-w deploy/mysql/my.cnf deploy/mysql/init-db1.sql deploy/mysql/init-migrator.sh

    if ((BUILD)); then
        log "Building the application image"
        docker compose build
    fi

    log "Starting the databases and Redis"
    docker compose up -d bank-db1 bank-db2 redis
    wait_healthy bank-db1 bank-db2 redis
    ensure_exporter_user

    log "Migrating the control plane and every ledger"
    docker compose run --rm migrate

    log "Starting every service"
    docker compose up -d
    wait_healthy banking-app celery-worker nginx prometheus alertmanager
    check_https
    if ((INSTALL_BACKUP_TIMER)); then
        install_backup_timer
    fi
    print_urls
}

# Sourced (tests call the functions one by one), it only defines them.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
