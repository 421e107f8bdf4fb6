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
# without --single-transaction (inconsistent under load), uncompressed and unverified, into
# ./backups on the same host, unscheduled and kept forever.
#
# Encryption: with BACKUP_AGE_RECIPIENTS (age public keys) each dump is encrypted as it is written
# (<target>__<database>.sql.gz.age); no plaintext touches the disk, and the private key, which
# only a restore needs, stays off this host. SHA256SUMS covers the encrypted files, so a backup is
# verified without the key.
#
# --scheduled (what deploy/systemd/bankcore-backup.timer runs daily): refuses to run without
# encryption, backs up, copies the backup off the host (BACKUP_RSYNC_TARGET and/or BACKUP_S3_URI)
# and prunes BACKUP_ROOT to BACKUP_KEEP_DAILY / _WEEKLY / _MONTHLY backups (docs/operations.md
# "Backups").
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE=docker
OUTPUT=""
SCHEDULED=0
PRUNE_ONLY=0
AGE_ARGS=()
DUMP_OPTIONS=(--single-transaction --routines --triggers --hex-blob --no-tablespaces
    --default-character-set=utf8mb4)

usage() {
    cat <<'USAGE'
Usage: deploy/backup.sh [--native] [--output DIR] [--scheduled | --prune] [--help]

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

Encryption (.env): BACKUP_AGE_RECIPIENTS  age public keys (age1…), space- or comma-separated,
  or BACKUP_AGE_RECIPIENTS_FILE, a file of them; each dump is written encrypted (.sql.gz.age).
Retention (--scheduled, --prune): keep the newest backup of each of the last BACKUP_KEEP_DAILY
  days (7), BACKUP_KEEP_WEEKLY ISO weeks (4) and BACKUP_KEEP_MONTHLY months (12); older
  <UTC timestamp> directories of BACKUP_ROOT are deleted.
Off-host copy (--scheduled): BACKUP_RSYNC_TARGET (rsync destination, e.g.
  backup@vault.example.com:/srv/bankcore) and/or BACKUP_S3_URI (s3://bucket/prefix, with
  BACKUP_S3_ENDPOINT for an S3-compatible store; the aws CLI and its usual credentials).

Options:
  --native       native mode (see above)
  --output DIR   write into DIR instead of BACKUP_ROOT/<UTC timestamp>
  --scheduled    encrypted backup, off-host copy, then retention (fails without encryption)
  --prune        only apply the retention to BACKUP_ROOT
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

# encrypt: stdin to stdout, through age when recipients are configured.
encrypt() {
    if ((${#AGE_ARGS[@]})); then
        age "${AGE_ARGS[@]}"
    else
        cat
    fi
}

# coordinates_tee FILE: copy stdin to stdout, and the dump's binlog coordinates comment (near its
# top) to FILE: read before compression and encryption, so backup.info can name them.
coordinates_tee() {
    awk -v out="$1" '!found && /^-- CHANGE (MASTER|REPLICATION SOURCE) TO / { print > out; found = 1 } { print }'
}

dump_one() { # dump_one TARGET FILE
    local target=$1 file=$2 label database host port user prefix password log_bin coordinates=${2%.partial}.binlog
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
            "${DUMP_OPTIONS[@]}" "$database" | coordinates_tee "$coordinates" | gzip -c | encrypt >"$file"
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
            "$database" | coordinates_tee "$coordinates" | gzip -c | encrypt >"$file"
    fi
}

# binlog_coordinates FILE: "<binlog file> <position>" from the comment coordinates_tee kept, or
# nothing.
binlog_coordinates() {
    [[ -s $1 ]] || return 0
    sed -n -E "s/.*_LOG_FILE='([^']+)', *[A-Z_]*_LOG_POS=([0-9]+).*/\\1 \\2/p" -- "$1"
}

# age_setup: AGE_ARGS from BACKUP_AGE_RECIPIENTS(_FILE).
age_setup() {
    local recipients file recipient
    recipients=$(env_value BACKUP_AGE_RECIPIENTS)
    file=$(env_value BACKUP_AGE_RECIPIENTS_FILE)
    [[ -n $recipients || -n $file ]] || return 0
    command -v age >/dev/null 2>&1 || die "BACKUP_AGE_RECIPIENTS is set but age is not installed (sudo apt-get install age)"
    for recipient in ${recipients//,/ }; do
        [[ $recipient =~ ^age1[0-9a-z]{58}$ ]] || die "BACKUP_AGE_RECIPIENTS: '$recipient' is not an age public key (age1…)"
        AGE_ARGS+=(-r "$recipient")
    done
    if [[ -n $file ]]; then
        [[ -r $file ]] || die "BACKUP_AGE_RECIPIENTS_FILE=$file cannot be read"
        AGE_ARGS+=(-R "$file")
    fi
}

# prune_backups ROOT: keep the newest backup of each of the last BACKUP_KEEP_DAILY days,
# BACKUP_KEEP_WEEKLY ISO weeks and BACKUP_KEEP_MONTHLY months; delete the other complete
# backups (a directory named by its UTC timestamp, with SHA256SUMS). Anything else is left alone.
prune_backups() {
    local root=$1 daily weekly monthly name day week month keep
    daily=$(env_value BACKUP_KEEP_DAILY 7)
    weekly=$(env_value BACKUP_KEEP_WEEKLY 4)
    monthly=$(env_value BACKUP_KEEP_MONTHLY 12)
    for keep in "$daily" "$weekly" "$monthly"; do
        [[ $keep =~ ^[0-9]+$ ]] || die "BACKUP_KEEP_DAILY/WEEKLY/MONTHLY must be whole numbers"
    done
    ((daily >= 1)) || die "BACKUP_KEEP_DAILY must be at least 1 (the newest backup is always kept)"
    [[ -d $root ]] || return 0
    local -A days=() weeks=() months=()
    local -a backups=()
    mapfile -t backups < <(find "$root" -mindepth 1 -maxdepth 1 -type d -regextype posix-extended \
        -regex '.*/[0-9]{8}T[0-9]{6}Z' -printf '%f\n' | sort -r)
    for name in "${backups[@]}"; do
        [[ -f $root/$name/SHA256SUMS ]] || continue
        day=${name:0:8}
        week=$(date -u -d "${day:0:4}-${day:4:2}-${day:6:2}" +%G-W%V)
        month=${name:0:6}
        keep=0
        if [[ -z ${days[$day]-} ]] && ((${#days[@]} < daily)); then
            days[$day]=1
            keep=1
        fi
        if [[ -z ${weeks[$week]-} ]] && ((${#weeks[@]} < weekly)); then
            weeks[$week]=1
            keep=1
        fi
        if [[ -z ${months[$month]-} ]] && ((${#months[@]} < monthly)); then
            months[$month]=1
            keep=1
        fi
        if ((!keep)); then
            log "Retention: deleting $root/$name"
            rm -rf -- "${root:?}/$name"
        fi
    done
}

# copy_off_host DIR: the backup to BACKUP_RSYNC_TARGET and/or BACKUP_S3_URI.
copy_off_host() {
    local dir=$1 rsync_target s3_uri endpoint copied=0
    rsync_target=$(env_value BACKUP_RSYNC_TARGET)
    s3_uri=$(env_value BACKUP_S3_URI)
    if [[ -n $rsync_target ]]; then
        command -v rsync >/dev/null 2>&1 || die "BACKUP_RSYNC_TARGET is set but rsync is not installed"
        log "Copying $dir to $rsync_target"
        rsync -a --partial -- "$dir" "${rsync_target%/}/" || die "rsync to $rsync_target failed; the local backup $dir is complete"
        copied=1
    fi
    if [[ -n $s3_uri ]]; then
        [[ $s3_uri == s3://* ]] || die "BACKUP_S3_URI must start with s3://"
        command -v aws >/dev/null 2>&1 || die "BACKUP_S3_URI is set but the aws CLI is not installed"
        endpoint=$(env_value BACKUP_S3_ENDPOINT)
        local -a extra=()
        [[ -z $endpoint ]] || extra=(--endpoint-url "$endpoint")
        log "Copying $dir to ${s3_uri%/}/$(basename "$dir")/"
        aws "${extra[@]}" s3 cp --recursive --only-show-errors -- "$dir" "${s3_uri%/}/$(basename "$dir")/" ||
            die "copy to $s3_uri failed; the local backup $dir is complete"
        copied=1
    fi
    if ((!copied)); then
        log "warning: no off-host copy (set BACKUP_RSYNC_TARGET or BACKUP_S3_URI): this backup dies with this host"
    fi
}

main() {
    while (($#)); do
        case $1 in
            --native) MODE=native ;;
            --scheduled) SCHEDULED=1 ;;
            --prune) PRUNE_ONLY=1 ;;
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

    if ((PRUNE_ONLY)); then
        prune_backups "$(env_value BACKUP_ROOT backups)"
        return 0
    fi
    age_setup
    if ((SCHEDULED && ${#AGE_ARGS[@]} == 0)); then
        die "--scheduled needs BACKUP_AGE_RECIPIENTS (or _FILE): scheduled backups are encrypted (docs/operations.md \"Backups\")"
    fi

    if [[ $MODE == docker ]]; then
        command -v docker >/dev/null 2>&1 || die "docker is not installed (use --native for direct connections)"
        docker_targets
    else
        DUMP=$(find_tool MYSQLDUMP mariadb-dump mysqldump)
        CLIENT=$(find_tool MYSQL_CLIENT mariadb mysql)
        BINLOG_OPTION=$(binlog_option "$("$DUMP" --help)")
        native_targets
    fi

    local stamp dir target label database tmp suffix=.sql.gz
    ((${#AGE_ARGS[@]} == 0)) || suffix=.sql.gz.age
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    dir=${OUTPUT:-$(env_value BACKUP_ROOT backups)/$stamp}
    [[ ! -e $dir || -z $(ls -A "$dir" 2>/dev/null) ]] || die "$dir exists and is not empty"
    mkdir -p "$dir"
    log "Backing up ${#TARGETS[@]} database(s) into $dir ($MODE mode)"

    # Start every dump at once (snapshots milliseconds apart), then collect the results.
    local -a pids=() files=()
    for target in "${TARGETS[@]}"; do
        IFS='|' read -r label database _ <<<"$target"
        tmp="$dir/${label}__${database}${suffix}.partial"
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
        if [[ $suffix == .sql.gz ]]; then
            gzip -t "$tmp" || die "$tmp is not a valid gzip file"
        else
            [[ $(head -c 21 "$tmp") == "age-encryption.org/v1" ]] || die "$tmp is not an age-encrypted file"
        fi
        mv "$tmp" "${tmp%.partial}"
    done

    {
        printf 'created_at=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        printf 'mode=%s\n' "$MODE"
        printf 'encrypted=%s\n' "$([[ $suffix == .sql.gz.age ]] && echo age || echo no)"
        printf 'git_commit=%s\n' "$(git rev-parse HEAD 2>/dev/null || echo unknown)"
        local coordinates
        for target in "${TARGETS[@]}"; do
            IFS='|' read -r label database _ <<<"$target"
            printf 'target=%s %s\n' "$label" "$database"
            coordinates=$(binlog_coordinates "$dir/${label}__${database}${suffix}.binlog")
            rm -f -- "$dir/${label}__${database}${suffix}.binlog"
            if [[ -n $coordinates ]]; then
                printf 'binlog=%s %s %s\n' "$label" "$database" "$coordinates"
            fi
        done
    } >"$dir/backup.info"

    (cd "$dir" && sha256sum -- *"$suffix" backup.info >SHA256SUMS)
    log "Backup complete: $dir"
    if ((SCHEDULED)); then
        copy_off_host "$dir"
        prune_backups "$(dirname "$dir")"
    fi
    printf '%s\n' "$dir"
}

main "$@"
