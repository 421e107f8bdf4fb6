#!/usr/bin/env bash
# update.sh — rolling update of a running bankcore deployment without losing in-flight transfers
# (seed §9.1, done right: the seed rebuilt and recreated its only app container in one step, so
# every request in flight was cut off and nothing was migrated).
#
#   1. git pull --ff-only (never merges or rewrites history on a server);
#   2. builds the new image;
#   3. runs the migrate service while the old version still serves: migrations must therefore be
#      backward compatible with the running code (add first, remove in a later release);
#   4. replaces celery-worker (SIGTERM = warm shutdown: the current task finishes within
#      stop_grace_period 60s; acks_late re-queues what was not finished) and celery-beat first:
#      the new recovery settles transfers of the old and the new engine alike, while an old
#      recovery must never meet a transfer of a newer engine;
#   5. starts as many new banking-app containers as are running, waits until they are healthy,
#      reloads nginx so it sends traffic to them too;
#   6. stops each old container with SIGTERM: gunicorn stops accepting, and graceful_timeout (30s,
#      deploy/gunicorn.conf.py) lets in-flight requests finish within compose's stop_grace_period;
#      nginx only retries a request on another replica when it was never sent (connect error),
#      and reloads nginx again.
# A transfer interrupted anyway (a killed worker, a timeout) is never lost: its state is in the
# ledgers' recovery table, and the recovery task (every RECOVERY_INTERVAL_SECONDS) finishes it
# forward once it was decided (its credit leg committed) or voids its hold after the deadline.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PULL=1
BUILD=1

usage() {
    cat <<'USAGE'
Usage: deploy/update.sh [--no-pull] [--no-build] [--help]

Rolling update of the running compose deployment: git pull --ff-only, build, migrate, replace
the Celery worker and beat (recovery first), then the banking-app containers one generation at a
time behind nginx.

Environment (or .env): APP_REPLICAS (banking-app containers to keep; default: as many as run
now, at least 1), DEPLOY_TIMEOUT (seconds to wait for health, default 300), COMPOSE_FILE.

Options:
  --no-pull    do not git pull (deploy the checked-out code)
  --no-build   do not rebuild the image
  -h, --help   show this help
USAGE
}

log() { printf '==> %s\n' "$*"; }
die() { printf 'update.sh: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=SCRIPTDIR/lib.sh
source "$ROOT/deploy/lib.sh"

# wait_containers_healthy ID...: bounded wait; fails if one exits or the timeout passes.
wait_containers_healthy() {
    local timeout deadline id state pending
    timeout=$(env_value DEPLOY_TIMEOUT 300)
    deadline=$((SECONDS + timeout))
    while :; do
        pending=0
        for id in "$@"; do
            state=$(container_state "$id")
            case $state in
                healthy) ;;
                exited | dead | missing) die "new container ${id:0:12} is $state; old containers keep serving. Logs: docker logs ${id:0:12}" ;;
                *) pending=1 ;;
            esac
        done
        ((pending)) || return 0
        ((SECONDS < deadline)) || die "new containers not healthy after ${timeout}s; old containers keep serving"
        sleep 3
    done
}

reload_nginx() {
    # nginx resolves `banking-app` when it loads its configuration; a reload picks up the new
    # replicas' addresses (and drops the old ones) without closing client connections.
    docker compose exec -T nginx nginx -s reload
}

main() {
    while (($#)); do
        case $1 in
            --no-pull) PULL=0 ;;
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
    command -v docker >/dev/null 2>&1 || die "docker is not installed"
    docker compose version >/dev/null 2>&1 || die "docker compose v2 is required"
    [[ -f .env ]] || die ".env not found: deploy first with deploy/deploy.sh"

    if ((PULL)); then
        log "Pulling the latest code (fast-forward only)"
        git pull --ff-only
    fi
    if ((BUILD)); then
        log "Building the new image"
        docker compose build
    fi

    log "Migrating (the old version keeps serving meanwhile)"
    docker compose run --rm migrate

    # Recovery first: the recovery workers must understand the transfers the new app writes
    # before the new app writes any. The old app replicas keep serving meanwhile.
    log "Replacing celery-worker (warm shutdown) and celery-beat"
    docker compose up -d --no-deps celery-worker celery-beat

    local -a old_ids new_ids all_ids
    mapfile -t old_ids < <(docker compose ps -q banking-app)
    local replicas
    replicas=$(env_value APP_REPLICAS "${#old_ids[@]}")
    [[ $replicas =~ ^[0-9]+$ ]] || die "APP_REPLICAS must be a number"
    ((replicas >= 1)) || replicas=1

    if ((${#old_ids[@]} == 0)); then
        log "banking-app is not running: starting $replicas replica(s)"
        docker compose up -d --no-deps --scale "banking-app=$replicas" banking-app
        mapfile -t new_ids < <(docker compose ps -q banking-app)
        wait_containers_healthy "${new_ids[@]}"
    else
        log "Starting $replicas new banking-app container(s) next to ${#old_ids[@]} old one(s)"
        docker compose up -d --no-deps --no-recreate \
            --scale "banking-app=$((${#old_ids[@]} + replicas))" banking-app
        mapfile -t all_ids < <(docker compose ps -q banking-app)
        new_ids=()
        local id old is_old
        for id in "${all_ids[@]}"; do
            is_old=0
            for old in "${old_ids[@]}"; do
                [[ ${id:0:12} == "${old:0:12}" ]] && is_old=1
            done
            ((is_old)) || new_ids+=("$id")
        done
        ((${#new_ids[@]} > 0)) || die "no new banking-app container was started"
        log "Waiting for ${#new_ids[@]} new container(s) to be healthy"
        wait_containers_healthy "${new_ids[@]}"
        reload_nginx

        log "Draining ${#old_ids[@]} old container(s) (SIGTERM, graceful timeout)"
        for old in "${old_ids[@]}"; do
            docker stop --time 40 "$old" >/dev/null
            docker rm "$old" >/dev/null
        done
        reload_nginx
    fi

    log "Update complete"
    docker compose ps
}

main "$@"
