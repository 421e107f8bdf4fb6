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
