#!/usr/bin/env bash
# backup.sh — consistent, checksummed dumps of every ledger and of the control plane.
#
#   deploy/backup.sh            Docker mode: mysqldump runs inside each database container
#   deploy/backup.sh --native   mysqldump/mariadb-dump against DB1_…, DB2_…, DB_DEFAULT_… servers
#
# Each database is dumped with --single-transaction (one consistent InnoDB snapshot, no locks held
# on the ledgers) and all dumps start together, so the snapshots are milliseconds apart. A
# transfer caught between them is resolved on restore by recovery (prepared legs are finished or
# voided according to the decision) and checked by `manage.py reconcile`, which restore.sh runs.
#
# Where the server keeps a binary log (the production my.cnf does), each dump also records the
# binlog coordinates of its snapshot, as a comment near its top (`-- CHANGE REPLICATION SOURCE TO
# …` from MySQL's mysqldump --source-data=2, `-- CHANGE MASTER TO …` from MariaDB's
# --master-data=2), and backup.info repeats them: replaying the binlog from there onto a restored
# dump brings that server forward to a later point in time. A server without a binary log is
# dumped without them (the option would fail there).
#
# Output: BACKUP_ROOT/<UTC timestamp>/<target>__<database>.sql.gz, backup.info and SHA256SUMS
# (verify with `cd DIR && sha256sum -c SHA256SUMS`). Passwords travel only in MYSQL_PWD, never
# on a command line. The seed's version dumped as root with the password on the command line,
# without --single-transaction (inconsistent under load), uncompressed and unverified.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE=docker
OUTPUT=""
DUMP_OPTIONS=(--single-transaction --routines --triggers --hex-blob --no-tablespaces
    --default-character-set=utf8mb4)

usage() {
    cat <<'USAGE'
Usage: deploy/backup.sh [--native] [--output DIR] [--help]

Dumps every ledger database and the control-plane database into
BACKUP_ROOT/<UTC timestamp>/ (default BACKUP_ROOT=backups), gzip-compressed, with a SHA256SUMS
manifest.

Docker mode (default): runs mysqldump inside each database container of the compose project.
  LEDGER_SERVICES  space-separated service:database pairs
                   (default "bank-db1:bank_source bank-db2:bank_dest"); the control plane
                   bank-db1:bank_core is always added.
Native mode (--native): connects directly with mysqldump or mariadb-dump (MYSQLDUMP overrides)
  to DB1_HOST/DB1_PORT/DB1_USER/DB1_PASSWORD/DB1_NAME, DB2_…, DB3_… (while DBn_HOST is set) and
  to the control plane DB_DEFAULT_* (defaults: DB1's server, database bank_core).
  Every variable may be given as NAME_FILE instead. Whether a server keeps a binary log is asked
  with mariadb or mysql (MYSQL_CLIENT overrides); if it does, the dump records its coordinates,
  for which MySQL's mysqldump needs the RELOAD and REPLICATION CLIENT privileges (MariaDB's
  needs neither together with --single-transaction).

Options:
  --native       native mode (see above)
  --output DIR   write into DIR instead of BACKUP_ROOT/<UTC timestamp>
  -h, --help     show this help
USAGE
}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'backup.sh: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=SCRIPTDIR/lib.sh
source "$ROOT/deploy/lib.sh"

# --- Targets ------------------------------------------------------------------------------------
# Each target is "label|database" (docker: label = compose service) or, in native mode,
# "label|database|host|port|user|password-variable-prefix" with label db1, db2, …, default.
TARGETS=()

docker_targets() {
    local pairs pair service database
    pairs="$(env_value LEDGER_SERVICES "bank-db1:bank_source bank-db2:bank_dest") bank-db1:bank_core"
    for pair in $pairs; do
        [[ $pair == *:* ]] || die "LEDGER_SERVICES entry '$pair' is not service:database"
        service=${pair%%:*}
        database=${pair#*:}
        TARGETS+=("$service|$database")
    done
}

native_targets() {
    local n=1 name default_name
    [[ -n $(getenv DB1_HOST) ]] || die "native mode needs DB1_HOST (and DB1_PORT, DB1_USER, DB1_PASSWORD, DB1_NAME)"
    while [[ -n $(getenv "DB${n}_HOST") ]]; do
        case $n in
            1) default_name=bank_source ;;
            2) default_name=bank_dest ;;
            *) default_name="bank_ledger${n}" ;;
        esac
        name=$(getenv "DB${n}_NAME" "$default_name")
        TARGETS+=("db${n}|${name}|$(getenv "DB${n}_HOST")|$(getenv "DB${n}_PORT" 3306)|$(getenv "DB${n}_USER" bank_user)|DB${n}")
        n=$((n + 1))
    done
    TARGETS+=("default|$(getenv DB_DEFAULT_NAME bank_core)|$(getenv DB_DEFAULT_HOST "$(getenv DB1_HOST)")|$(getenv DB_DEFAULT_PORT "$(getenv DB1_PORT 3306)")|$(getenv DB_DEFAULT_USER "$(getenv DB1_USER bank_user)")|DB_DEFAULT")
}

# binlog_option DUMP_HELP: the option that writes the snapshot's binlog coordinates as a comment,
# named as the dump tool names it (MySQL 8.0.26 renamed --master-data to --source-data).
binlog_option() {
    if [[ $1 == *--source-data* ]]; then
        printf '%s' --source-data=2
    else
        printf '%s' --master-data=2
    fi
}

dump_one() { # dump_one TARGET FILE
    local target=$1 file=$2 label database host port user prefix password log_bin
    IFS='|' read -r label database host port user prefix <<<"$target"
    if [[ $MODE == docker ]]; then
        # The container's own client and dump tool decide (inside it) whether, and how, to ask for
        # the coordinates.
        # shellcheck disable=SC2016  # expanded by the container's shell, not this one
        docker compose exec -T "$label" sh -c '
            export MYSQL_PWD="$MYSQL_ROOT_PASSWORD"
            log_bin=$(mysql -uroot --batch --skip-column-names -e "SELECT @@GLOBAL.log_bin") || exit
            if [ "$log_bin" = 1 ]; then
                case $(mysqldump --help) in
                    *--source-data*) set -- --source-data=2 "$@" ;;
                    *) set -- --master-data=2 "$@" ;;
                esac
            fi
            exec mysqldump -uroot "$@"' sh \
            "${DUMP_OPTIONS[@]}" "$database" | gzip -c >"$file"
    else
        password=$(getenv "${prefix}_PASSWORD")
        if [[ $prefix == DB_DEFAULT && -z $password ]]; then
            password=$(getenv DB1_PASSWORD)
        fi
        local -a conn options=("${DUMP_OPTIONS[@]}")
        mapfile -t conn < <(connection_args "$host" "$port")
        log_bin=$(MYSQL_PWD="$password" "$CLIENT" "${conn[@]}" --user="$user" --batch \
            --skip-column-names -e 'SELECT @@GLOBAL.log_bin')
        if [[ $log_bin == 1 ]]; then
            options+=("$BINLOG_OPTION")
        fi
        MYSQL_PWD="$password" "$DUMP" "${conn[@]}" --user="$user" "${options[@]}" \
            "$database" | gzip -c >"$file"
    fi
}

# binlog_coordinates FILE: "<binlog file> <position>" from the dump's comment, or nothing.
binlog_coordinates() {
    # sed stops at the comment (or at the first table), near the top: gzip's broken pipe is
    # expected then.
    gzip -dc -- "$1" 2>/dev/null | sed -n -E \
        -e "/^-- CHANGE (MASTER|REPLICATION SOURCE) TO /{s/.*_LOG_FILE='([^']+)', *[A-Z_]*_LOG_POS=([0-9]+).*/\\1 \\2/p;q;}" \
        -e '/^-- Table structure/q' || true
}

main() {
    while (($#)); do
        case $1 in
            --native) MODE=native ;;
            --output)
                (($# >= 2)) || die "--output needs a directory"
                OUTPUT=$2
                shift
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

    if [[ $MODE == docker ]]; then
        command -v docker >/dev/null 2>&1 || die "docker is not installed (use --native for direct connections)"
        docker_targets
    else
        DUMP=$(find_tool MYSQLDUMP mariadb-dump mysqldump)
        CLIENT=$(find_tool MYSQL_CLIENT mariadb mysql)
        BINLOG_OPTION=$(binlog_option "$("$DUMP" --help)")
        native_targets
    fi

    local stamp dir target label database tmp
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    dir=${OUTPUT:-$(env_value BACKUP_ROOT backups)/$stamp}
    [[ ! -e $dir || -z $(ls -A "$dir" 2>/dev/null) ]] || die "$dir exists and is not empty"
    mkdir -p "$dir"
    log "Backing up ${#TARGETS[@]} database(s) into $dir ($MODE mode)"

    # Start every dump at once (snapshots milliseconds apart), then collect the results.
    local -a pids=() files=()
    for target in "${TARGETS[@]}"; do
        IFS='|' read -r label database _ <<<"$target"
        tmp="$dir/${label}__${database}.sql.gz.partial"
        files+=("$tmp")
        dump_one "$target" "$tmp" &
        pids+=($!)
    done
    local i failed=0
    for i in "${!pids[@]}"; do
        if ! wait "${pids[$i]}"; then
            printf 'backup.sh: error: dump failed: %s\n' "${files[$i]%.partial}" >&2
            failed=1
        fi
    done
    if ((failed)); then
        die "backup incomplete; partial files left in $dir for inspection"
    fi
    for tmp in "${files[@]}"; do
        gzip -t "$tmp" || die "$tmp is not a valid gzip file"
        mv "$tmp" "${tmp%.partial}"
    done

    {
        printf 'created_at=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        printf 'mode=%s\n' "$MODE"
        printf 'git_commit=%s\n' "$(git rev-parse HEAD 2>/dev/null || echo unknown)"
        local coordinates
        for target in "${TARGETS[@]}"; do
            IFS='|' read -r label database _ <<<"$target"
            printf 'target=%s %s\n' "$label" "$database"
            coordinates=$(binlog_coordinates "$dir/${label}__${database}.sql.gz")
            if [[ -n $coordinates ]]; then
                printf 'binlog=%s %s %s\n' "$label" "$database" "$coordinates"
            fi
        done
    } >"$dir/backup.info"

    (cd "$dir" && sha256sum -- *.sql.gz backup.info >SHA256SUMS)
    log "Backup complete: $dir"
    printf '%s\n' "$dir"
}

main "$@"
