#!/usr/bin/env bash
# firewall.sh — the host firewall (seed §7.2, corrected) with ufw: incoming traffic is refused
# except SSH and nginx's HTTP and HTTPS ports; outgoing traffic is allowed.
#
#   sudo deploy/firewall.sh              apply (asks nothing; prints the resulting rules)
#   deploy/firewall.sh --dry-run         print the ufw commands only
#
# Differences from the seed: it does not open 3000 (Grafana). Grafana, Prometheus, Alertmanager
# and Kibana are published on 127.0.0.1 only (docker-compose.yml) and are reached through an SSH
# tunnel (docs/operations.md "Firewall and ports"). The ports come from .env (HTTP_PORT,
# HTTPS_PORT) and --ssh-port, so a non-standard setup is not locked out.
#
# Docker writes its own iptables rules for published ports, ahead of ufw's: ufw does not filter a
# port a container publishes on 0.0.0.0. That is why only nginx publishes on every interface;
# never publish another service without a 127.0.0.1: prefix.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DRY_RUN=0
SSH_PORT=22
SSH_FROM=any

usage() {
    cat <<'USAGE'
Usage: deploy/firewall.sh [--ssh-port PORT] [--ssh-from CIDR] [--dry-run] [--help]

Configures ufw: deny incoming, allow outgoing, allow SSH (PORT, default 22, from CIDR, default
anywhere) and nginx's HTTP_PORT and HTTPS_PORT (.env; default 80 and 443), then enables it.
Needs root (or run it with sudo) unless --dry-run.

Options:
  --ssh-port PORT   the port sshd listens on (default 22)
  --ssh-from CIDR   allow SSH only from this network (e.g. 203.0.113.0/24)
  --dry-run         print the ufw commands instead of running them
  -h, --help        show this help
USAGE
}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'firewall.sh: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=SCRIPTDIR/lib.sh
source "$ROOT/deploy/lib.sh"

valid_port() {
    [[ $1 =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= 65535))
}

ufw_run() {
    if ((DRY_RUN)); then
        printf 'ufw %s\n' "$*"
    else
        ufw "$@"
    fi
}

main() {
    while (($#)); do
        case $1 in
            --dry-run) DRY_RUN=1 ;;
            --ssh-port)
                (($# >= 2)) || die "--ssh-port needs a port"
                SSH_PORT=$2
                shift
                ;;
            --ssh-from)
                (($# >= 2)) || die "--ssh-from needs a network"
                SSH_FROM=$2
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

    local http_port https_port
    http_port=$(env_value HTTP_PORT 80)
    https_port=$(env_value HTTPS_PORT 443)
    for port in "$SSH_PORT" "$http_port" "$https_port"; do
        valid_port "$port" || die "'$port' is not a TCP port"
    done
    [[ $SSH_FROM == any || $SSH_FROM =~ ^[0-9A-Fa-f:.]+(/[0-9]+)?$ ]] || die "--ssh-from '$SSH_FROM' is not an address or network"

    if ((!DRY_RUN)); then
        command -v ufw >/dev/null 2>&1 || die "ufw is not installed: sudo apt-get install ufw"
        ((EUID == 0)) || die "run as root: sudo deploy/firewall.sh"
    fi

    log "Incoming: SSH ${SSH_PORT}/tcp from ${SSH_FROM}, HTTP ${http_port}/tcp, HTTPS ${https_port}/tcp; nothing else"
    ufw_run default deny incoming
    ufw_run default allow outgoing
    # SSH first, so enabling the firewall never cuts the session that runs this script.
    if [[ $SSH_FROM == any ]]; then
        ufw_run limit "${SSH_PORT}/tcp" comment "SSH"
    else
        ufw_run limit from "$SSH_FROM" to any port "$SSH_PORT" proto tcp comment "SSH"
    fi
    ufw_run allow "${http_port}/tcp" comment "bankcore nginx HTTP (redirects to HTTPS)"
    ufw_run allow "${https_port}/tcp" comment "bankcore nginx HTTPS"
    ufw_run --force enable
    if ((!DRY_RUN)); then
        ufw status verbose
    fi
}

main "$@"
