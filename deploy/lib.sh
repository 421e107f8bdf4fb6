# shellcheck shell=bash
# Helpers shared by the deploy scripts (deploy.sh, update.sh, backup.sh, restore.sh), which source
# this file after defining their own `log` and `die` (the messages name the script).

# env_value NAME [DEFAULT]: the environment wins, then .env, then DEFAULT. .env is parsed, never
# sourced, so nothing in it is executed.
env_value() {
    local name=$1 default=${2-} line value
    if [[ -n ${!name-} ]]; then
        printf '%s' "${!name}"
        return
    fi
    if [[ -f .env ]]; then
        line=$(grep -E "^${name}=" .env | tail -n 1 || true)
        value=${line#*=}
        value=${value#\"}
        value=${value%\"}
        if [[ -n $value ]]; then
            printf '%s' "$value"
            return
        fi
    fi
    printf '%s' "$default"
}

# getenv NAME [DEFAULT]: NAME_FILE (a file holding the value) wins over NAME.
getenv() {
    local name=$1 default=${2-} file_var="${1}_FILE"
    if [[ -n ${!file_var-} ]]; then
        [[ -r ${!file_var} ]] || die "$file_var=${!file_var} cannot be read"
        tr -d '\n' <"${!file_var}"
    elif [[ -n ${!name-} ]]; then
        printf '%s' "${!name}"
    else
        printf '%s' "$default"
    fi
}

# find_tool OVERRIDE_VAR CANDIDATE...: the client named by OVERRIDE_VAR, else the first installed.
find_tool() {
    local override=$1 candidate
    shift
    if [[ -n ${!override-} ]]; then
        command -v "${!override}" >/dev/null 2>&1 || die "$override=${!override} not found"
        printf '%s' "${!override}"
        return
    fi
    for candidate in "$@"; do
        if command -v "$candidate" >/dev/null 2>&1; then
            printf '%s' "$candidate"
            return
        fi
    done
    die "none of $* is installed (install mariadb-client or mysql-client)"
}

# connection_args HOST PORT: mysql client options; a HOST starting with / is a socket.
connection_args() {
    if [[ $1 == /* ]]; then
        printf '%s\n' "--socket=$1"
    else
        printf '%s\n' "--protocol=TCP" "--host=$1" "--port=$2"
    fi
}

# container_state ID: health status if the container has a health check, else its state.
container_state() {
    docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null || echo missing
}

# version_at_least HAVE NEED: whether version HAVE (e.g. 24.0.7, v2.21.0, 20.10.24+dfsg1) is NEED
# or later, compared part by part as numbers.
version_at_least() {
    local have=${1#v} need=${2#v} part
    local -a have_parts need_parts
    have=${have%%[^0-9.]*}
    [[ -n $have ]] || return 1
    IFS=. read -r -a have_parts <<<"$have"
    IFS=. read -r -a need_parts <<<"$need"
    for part in 0 1 2; do
        if ((10#${have_parts[part]:-0} > 10#${need_parts[part]:-0})); then return 0; fi
        if ((10#${have_parts[part]:-0} < 10#${need_parts[part]:-0})); then return 1; fi
    done
    return 0
}

# env_file_set NAME VALUE: set NAME=VALUE in .env (replacing its line, or appending one), keeping
# the file's mode.
env_file_set() {
    local name=$1 value=$2 tmp
    [[ -f .env ]] || die ".env does not exist"
    tmp=$(mktemp .env.XXXXXX)
    chmod --reference=.env "$tmp"
    awk -v name="$name" -v value="$value" '
        index($0, name "=") == 1 { if (!done) print name "=" value; done = 1; next }
        { print }
        END { if (!done) print name "=" value }' .env >"$tmp"
    mv "$tmp" .env
}

# valid_host_name NAME: a DNS name (letters, digits, hyphens, dots), as the certificate and nginx
# take it.
valid_host_name() {
    [[ $1 =~ ^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$ ]] && ((${#1} <= 253))
}
