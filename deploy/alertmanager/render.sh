#!/bin/sh
# render.sh — write Alertmanager's configuration from the environment, then (given a command)
# run it. Alertmanager cannot read environment variables in its configuration file; this POSIX sh
# script (the alertmanager image is busybox: sh, sed) runs as the container's entrypoint:
#
#   render.sh OUTPUT [COMMAND ARGS...]
#
# Receivers (docker-compose.yml passes these from .env; docs/operations.md "Alerting"):
#   ALERT_EMAIL_TO           comma-separated addresses that get every alert by email
#   ALERT_SMTP_SMARTHOST     host:port of the mail relay (required with ALERT_EMAIL_TO)
#   ALERT_SMTP_FROM          sender address (default alertmanager@SERVER_NAME)
#   ALERT_SMTP_USER / ALERT_SMTP_PASSWORD   relay login (optional)
#   ALERT_SMTP_REQUIRE_TLS   true (default) or false
#   ALERT_WEBHOOK_URL        URL that gets every alert as Alertmanager's webhook JSON
#                            (a chat bridge, a paging service)
# With neither set, alerts are only visible in Alertmanager's own UI (127.0.0.1:9093); the
# container says so in its log. Critical alerts repeat every hour, warnings every 4 hours.
set -eu
# Values are written with printf, never echo: dash's and busybox's echo interpret backslashes.

output=${1:?usage: render.sh OUTPUT [COMMAND ARGS...]}
shift

# quote VALUE: VALUE as a YAML double-quoted scalar.
quote() {
    printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
}

bool() {
    case $1 in
        true | 1 | yes | on) printf true ;;
        false | 0 | no | off) printf false ;;
        *)
            echo "render.sh: $2=$1 is not true or false" >&2
            exit 1
            ;;
    esac
}

email_to=${ALERT_EMAIL_TO:-}
webhook=${ALERT_WEBHOOK_URL:-}
if [ -n "$email_to" ] && [ -z "${ALERT_SMTP_SMARTHOST:-}" ]; then
    echo "render.sh: ALERT_EMAIL_TO is set but ALERT_SMTP_SMARTHOST is not" >&2
    exit 1
fi
require_tls=$(bool "${ALERT_SMTP_REQUIRE_TLS:-true}" ALERT_SMTP_REQUIRE_TLS)
case $webhook in
    "" | http://* | https://*) ;;
    *)
        echo "render.sh: ALERT_WEBHOOK_URL must start with http:// or https://" >&2
        exit 1
        ;;
esac

{
    echo "# Written by deploy/alertmanager/render.sh at container start; do not edit."
    echo "global:"
    echo "  resolve_timeout: 5m"
    if [ -n "$email_to" ]; then
        printf '%s\n' "  smtp_smarthost: $(quote "$ALERT_SMTP_SMARTHOST")"
        printf '%s\n' "  smtp_from: $(quote "${ALERT_SMTP_FROM:-alertmanager@${SERVER_NAME:-localhost}}")"
        echo "  smtp_require_tls: $require_tls"
        if [ -n "${ALERT_SMTP_USER:-}" ]; then
            printf '%s\n' "  smtp_auth_username: $(quote "$ALERT_SMTP_USER")"
            printf '%s\n' "  smtp_auth_password: $(quote "${ALERT_SMTP_PASSWORD:-}")"
        fi
    fi
    cat <<'YAML'

templates: []

route:
  receiver: operators
  group_by: [alertname, severity]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: ['severity="critical"']
      receiver: operators
      group_wait: 10s
      repeat_interval: 1h

# A critical alert silences the warning of the same name (BankcoreLedgerDown from both sources).
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [alertname]

receivers:
  - name: operators
YAML
    if [ -n "$email_to" ]; then
        echo "    email_configs:"
        printf '%s\n' "      - to: $(quote "$email_to")"
        echo "        send_resolved: true"
        echo "        headers:"
        echo "          Subject: '[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.severity }})'"
    fi
    if [ -n "$webhook" ]; then
        echo "    webhook_configs:"
        printf '%s\n' "      - url: $(quote "$webhook")"
        echo "        send_resolved: true"
    fi
} >"$output"

if [ -z "$email_to" ] && [ -z "$webhook" ]; then
    echo "render.sh: warning: neither ALERT_EMAIL_TO nor ALERT_WEBHOOK_URL is set: alerts reach no one outside Alertmanager's UI" >&2
fi

if [ $# -gt 0 ]; then
    exec "$@"
fi
