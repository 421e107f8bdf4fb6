#!/usr/bin/env bash
# restore.sh — restore a backup made by backup.sh, then check the books.
#
#   deploy/restore.sh BACKUP_DIR --force            Docker mode
#   deploy/restore.sh BACKUP_DIR --force --native   direct connections (DB1_…, DB2_…, DB_DEFAULT_…)
#
# 1. verifies BACKUP_DIR/SHA256SUMS and refuses on any mismatch or missing file; an encrypted
#    backup (.sql.gz.age) also needs BACKUP_AGE_IDENTITY, the age private key file brought to this
#    host for the restore (and removed after), which it checks decrypts every dump;
# 2. refuses to touch anything without --force (it then lists what it would restore);
# 3. Docker mode: stops banking-app, celery-worker and celery-beat so nothing writes meanwhile
#    (native mode: stopping the app is the caller's job);
# 4. restores every dump into its database (tables in the dump are dropped and recreated);
# 5. starts the stopped services again;
# 6. runs `python manage.py recover_transfers --grace 0`: the dumps are snapshots taken
#    milliseconds apart, so a transfer caught between them can be decided in one ledger's dump and
#    unknown or pending in another's; recovery finishes it forward or voids it, as it would after a
#    crash. The coordinators that ran those transfers died with the old world, so there is no
#    grace period to wait for (a transfer still within its deadline, TRANSACTION_TIMEOUT, is left
#    to beat's recovery);
# 7. runs `python manage.py reconcile` and exits with its status (0 = books balance), or 1 if
#    recovery itself failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE=docker
FORCE=0
BACKUP_DIR=""
APP_SERVICES=(banking-app celery-worker celery-beat)

usage() {
    cat <<'USAGE'
Usage: deploy/restore.sh BACKUP_DIR --force [--native] [--help]

Restores the dumps of BACKUP_DIR (written by deploy/backup.sh) after verifying SHA256SUMS, then
runs `manage.py recover_transfers --grace 0` (settles transfers caught between the dumps) and
`manage.py reconcile`, and exits with reconcile's status. Without --force it only verifies and
lists what it would restore.

Docker mode (default): restores into the compose database containers (service from the dump's
file name) as root, stopping banking-app, celery-worker and celery-beat meanwhile.
Native mode (--native): restores with mariadb or mysql (MYSQL_CLIENT overrides) into the
databases named by DB1_*, DB2_*, … and DB_DEFAULT_* (defaults: DB1's server, bank_core), matched
by the dump's file name (db1__…, default__…); then runs ${PYTHON:-python} manage.py
recover_transfers and reconcile in the repository root. Every variable may be given as NAME_FILE
instead.

Encrypted backups (*.sql.gz.age, deploy/backup.sh with BACKUP_AGE_RECIPIENTS): set
BACKUP_AGE_IDENTITY to the age private key file (kept off the backed-up host).

Options:
  --force      really restore (destroys the current content of the restored tables)
  --native     native mode (see above)
  -h, --help   show this help
USAGE
}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'restore.sh: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=SCRIPTDIR/lib.sh
source "$ROOT/deploy/lib.sh"

# native_target LABEL: "database|host|port|user|password" for db1, db2, …, default.
native_target() {
    local label=$1 n prefix default_name password
    if [[ $label == default ]]; then
        password=$(getenv DB_DEFAULT_PASSWORD)
        [[ -n $password ]] || password=$(getenv DB1_PASSWORD)
        printf '%s|%s|%s|%s|%s' \
            "$(getenv DB_DEFAULT_NAME bank_core)" \
            "$(getenv DB_DEFAULT_HOST "$(getenv DB1_HOST)")" \
            "$(getenv DB_DEFAULT_PORT "$(getenv DB1_PORT 3306)")" \
            "$(getenv DB_DEFAULT_USER "$(getenv DB1_USER bank_user)")" \
            "$password"
        return
    fi
    [[ $label =~ ^db([0-9]+)$ ]] || die "unexpected dump label '$label'"
    n=${BASH_REMATCH[1]}
    prefix="DB${n}"
    case $n in
        1) default_name=bank_source ;;
        2) default_name=bank_dest ;;
        *) default_name="bank_ledger${n}" ;;
    esac
    printf '%s|%s|%s|%s|%s' \
        "$(getenv "${prefix}_NAME" "$default_name")" \
        "$(getenv "${prefix}_HOST")" \
        "$(getenv "${prefix}_PORT" 3306)" \
        "$(getenv "${prefix}_USER" bank_user)" \
        "$(getenv "${prefix}_PASSWORD")"
}

verify_backup() {
    [[ -d $BACKUP_DIR ]] || die "$BACKUP_DIR is not a directory"
    [[ -f $BACKUP_DIR/SHA256SUMS ]] || die "$BACKUP_DIR has no SHA256SUMS: refusing to restore an unverified backup"
    log "Verifying $BACKUP_DIR/SHA256SUMS"
    if ! (cd "$BACKUP_DIR" && sha256sum --check --strict --quiet SHA256SUMS); then
        die "checksum verification failed: the backup is damaged or was modified; nothing restored"
    fi
    mapfile -t DUMPS < <(cd "$BACKUP_DIR" && awk '{ sub(/^\*/, "", $2); print $2 }' SHA256SUMS | grep -E '__.+\.sql\.gz(\.age)?$' | sort)
    ((${#DUMPS[@]} > 0)) || die "SHA256SUMS lists no dumps"
    local file identity
    for file in "${DUMPS[@]}"; do
        [[ $file != */* ]] || die "unexpected path in SHA256SUMS: $file"
        if [[ $file == *.age ]]; then
            identity=$(getenv BACKUP_AGE_IDENTITY)
            [[ -n $identity ]] || die "$file is encrypted: set BACKUP_AGE_IDENTITY to the age private key file; nothing restored"
            [[ -r $identity ]] || die "BACKUP_AGE_IDENTITY=$identity cannot be read; nothing restored"
            command -v age >/dev/null 2>&1 || die "age is not installed (sudo apt-get install age); nothing restored"
            # The whole file decrypts with this key (age authenticates every chunk).
            age -d -i "$identity" -- "$BACKUP_DIR/$file" | gzip -t ||
                die "$file does not decrypt with BACKUP_AGE_IDENTITY=$identity; nothing restored"
        fi
    done
}

# plain FILE: the dump's SQL on stdout (decrypted and decompressed).
plain() {
    if [[ $1 == *.age ]]; then
        age -d -i "$(getenv BACKUP_AGE_IDENTITY)" -- "$BACKUP_DIR/$1" | gzip -dc
    else
        gzip -dc -- "$BACKUP_DIR/$1"
    fi
}

restore_one() { # restore_one FILE
    local file=$1 base label database target host port user password
    base=${file%.age}
    base=${base%.sql.gz}
    label=${base%%__*}
    database=${base#*__}
    if [[ $MODE == docker ]]; then
        log "Restoring $file into $label/$database"
        docker compose exec -T "$label" sh -c \
            'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec mysql -uroot --batch -e "CREATE DATABASE IF NOT EXISTS \`$1\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"' \
            sh "$database"
        plain "$file" | docker compose exec -T "$label" sh -c \
            'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec mysql -uroot --batch --default-character-set=utf8mb4 "$1"' \
            sh "$database"
    else
        target=$(native_target "$label")
        IFS='|' read -r database host port user password <<<"$target"
        if [[ $database != "${base#*__}" ]]; then
            log "note: $file was taken from database ${base#*__}; restoring into $database"
        fi
        log "Restoring $file into $label ($host:$port/$database)"
        local -a conn
        mapfile -t conn < <(connection_args "$host" "$port")
        # Trigger and routine DEFINER clauses name the original account; creating them under
        # another one needs SUPER, so they are dropped (the restoring user becomes the definer).
        # Data lines (INSERT …) are left untouched.
        # shellcheck disable=SC2016  # the backquotes are MySQL identifier quotes, not expansions
        plain "$file" |
            sed -E '/^INSERT /!s/DEFINER=`[^`]*`@`[^`]*`//g' |
            MYSQL_PWD="$password" "$CLIENT" "${conn[@]}" --user="$user" --batch \
                --default-character-set=utf8mb4 "$database"
    fi
}

main() {
    while (($#)); do
        case $1 in
            --force) FORCE=1 ;;
            --native) MODE=native ;;
            -h | --help)
                usage
                exit 0
                ;;
            -*)
                usage >&2
                die "unknown option: $1"
                ;;
            *)
                [[ -z $BACKUP_DIR ]] || die "only one BACKUP_DIR may be given"
                BACKUP_DIR=${1%/}
                ;;
        esac
        shift
    done
    [[ -n $BACKUP_DIR ]] || {
        usage >&2
        die "BACKUP_DIR is required"
    }
    BACKUP_DIR=$(cd "$BACKUP_DIR" 2>/dev/null && pwd) || die "$BACKUP_DIR is not a directory"

    verify_backup

    local file label database host
    # Check every target before changing anything.
    for file in "${DUMPS[@]}"; do
        label=${file%%__*}
        if [[ $MODE == native ]]; then
            IFS='|' read -r database host _ <<<"$(native_target "$label")"
            [[ -n $host ]] || die "$file: no server configured for '$label' (set DBn_HOST; the control plane falls back to DB1_HOST)"
            [[ -n $database ]] || die "$file: no database name for '$label'"
        fi
    done

    if ((!FORCE)); then
        log "Backup verified. It would restore (replacing the current tables):"
        printf '    %s\n' "${DUMPS[@]}" >&2
        die "refusing to restore without --force"
    fi

    if [[ $MODE == docker ]]; then
        command -v docker >/dev/null 2>&1 || die "docker is not installed (use --native for direct connections)"
        log "Stopping ${APP_SERVICES[*]} (nothing may write while the ledgers are replaced)"
        docker compose stop "${APP_SERVICES[@]}"
    else
        CLIENT=$(find_tool MYSQL_CLIENT mariadb mysql)
        log "Native mode: make sure the app, Celery worker and beat are stopped"
    fi

    for file in "${DUMPS[@]}"; do
        if ! restore_one "$file"; then
            die "restoring $file failed; the application stays stopped. Fix the cause and run restore.sh again"
        fi
    done
    log "All ${#DUMPS[@]} dump(s) restored"

    local -a manage
    if [[ $MODE == docker ]]; then
        log "Starting ${APP_SERVICES[*]}"
        docker compose start "${APP_SERVICES[@]}"
        manage=(docker compose exec -T banking-app python manage.py)
    else
        manage=("${PYTHON:-python}" manage.py)
    fi
    # Recovery before reconciliation: until it ran, a transfer caught between two dumps shows as
    # money held or moved in one ledger only, which reconcile would report as a discrepancy.
    local recovered=0 status=0
    log "Settling transfers caught between the dumps: manage.py recover_transfers --grace 0"
    "${manage[@]}" recover_transfers --grace 0 || recovered=$?
    if ((recovered != 0)); then
        log "recover_transfers failed (exit status $recovered); reconciling anyway to show the state"
    fi
    log "Reconciling the ledgers: manage.py reconcile"
    "${manage[@]}" reconcile --no-progress || status=$?
    if ((status == 0 && recovered != 0)); then
        status=1
    fi
    if ((status == 0)); then
        log "Restore complete: reconciliation is clean"
    else
        log "Restore complete, but recovery or reconciliation reported problems (exit status $status): investigate before accepting transfers"
    fi
    exit "$status"
}

main "$@"
