#!/usr/bin/env bash
# deploy.sh — one-click deployment of bankcore with Docker Compose (seed §6.1, done right).
#
# Differences from the seed's script, on purpose:
#   - never pipes a download into sudo: missing prerequisites are reported with what to install;
#   - uses `docker compose` (v2 plugin), not the retired `docker-compose` v1;
#   - writes .env with random secrets on the first run only, and never overwrites it;
#   - makes a self-signed certificate only when deploy/nginx/ssl has none;
#   - waits for health checks with a bounded timeout instead of `sleep 30`;
#   - migrates every database (control plane and each ledger) through the `migrate` service.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SECRET_VARS=(SECRET_KEY JWT_SECRET_KEY AUDIT_CHAIN_KEY MYSQL_ROOT_PASSWORD DB1_PASSWORD DB2_PASSWORD
    DB_MIGRATE_PASSWORD REDIS_PASSWORD MYSQL_EXPORTER_PASSWORD GRAFANA_ADMIN_PASSWORD)
SSL_DIR="deploy/nginx/ssl"
BUILD=1

usage() {
    cat <<'USAGE'
Usage: deploy/deploy.sh [--no-build] [--help]

Deploys bankcore with Docker Compose from the repository root:
  1. checks prerequisites (docker, docker compose v2, openssl);
  2. creates .env from .env.example with random secrets (first run only, never overwritten);
  3. creates a self-signed TLS certificate in deploy/nginx/ssl if none is present;
  4. builds the application image (skipped with --no-build);
  5. starts MySQL and Redis, waits until healthy, creates the metrics user for mysqld-exporter;
  6. migrates the control plane and every ledger (the `migrate` service);
  7. starts everything, waits until every service is healthy, prints the URLs.

Options:
  --no-build   use the existing image instead of building it
  -h, --help   show this help

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
        if ! docker compose version >/dev/null 2>&1; then
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
    if [[ -f .env ]]; then
        log ".env exists: keeping it (delete it yourself to regenerate secrets)"
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

ensure_certificate() {
    if [[ -s $SSL_DIR/banking.crt && -s $SSL_DIR/banking.key ]]; then
        log "TLS certificate found in $SSL_DIR"
        return
    fi
    log "No TLS certificate in $SSL_DIR: creating a self-signed one for localhost"
    mkdir -p "$SSL_DIR"
    (
        umask 077
        openssl req -x509 -nodes -newkey rsa:2048 -days 365 \
            -keyout "$SSL_DIR/banking.key" -out "$SSL_DIR/banking.crt" \
            -subj "/CN=localhost" \
            -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
    )
    chmod 644 "$SSL_DIR/banking.crt"
    log "Replace $SSL_DIR/banking.crt and banking.key with a real certificate for production."
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
    local https_port grafana_port prometheus_port app_url
    https_port=$(env_value HTTPS_PORT 443)
    grafana_port=$(env_value GRAFANA_PORT 3000)
    prometheus_port=$(env_value PROMETHEUS_PORT 9090)
    app_url="https://localhost"
    [[ $https_port == 443 ]] || app_url="https://localhost:${https_port}"
    cat <<URLS

=== bankcore is up ===
  Application (admin at /admin/):  ${app_url}
  Grafana (loopback only):         http://localhost:${grafana_port}  (user $(env_value GRAFANA_ADMIN_USER admin), password GRAFANA_ADMIN_PASSWORD in .env)
  Prometheus (loopback only):      http://localhost:${prometheus_port}

  Create the first teller:  docker compose exec banking-app python manage.py createsuperuser
  Status / logs:            docker compose ps / docker compose logs -f banking-app
  Backup / update:          deploy/backup.sh / deploy/update.sh
  Stop:                     docker compose down   (data stays in the named volumes)
URLS
}

main() {
    while (($#)); do
        case $1 in
            --no-build) BUILD=0 ;;
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
    wait_healthy banking-app celery-worker nginx prometheus
    check_https
    print_urls
}

main "$@"
