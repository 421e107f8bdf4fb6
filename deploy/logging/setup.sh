#!/bin/sh
# setup.sh — the one-shot `logging-setup` job of the `logging` profile: prepares Elasticsearch
# and Kibana for bankcore's logs, idempotently (run again, it changes nothing new).
#
#   1. waits for Elasticsearch; sets the password of the built-in kibana_system user
#      (KIBANA_SYSTEM_PASSWORD) so Kibana can connect;
#   2. installs the lifecycle policies (bankcore-logs: 30 days; bankcore-audit: 400 days) and the
#      index templates (deploy/logging/elasticsearch/);
#   3. waits for Kibana and imports the saved objects (deploy/logging/kibana/saved-objects.ndjson):
#      data views bankcore-app-*, bankcore-audit-*, bankcore-nginx-*, the saved searches
#      "bankcore errors", "bankcore transfers", "bankcore audit events" and the dashboard
#      "bankcore overview".
#
# Runs in the curl image (sh + curl); ELASTIC_PASSWORD and KIBANA_SYSTEM_PASSWORD come from .env.
set -eu

DIR=$(cd "$(dirname "$0")" && pwd)
ES=${ELASTICSEARCH_URL:-http://elasticsearch:9200}
KIBANA=${KIBANA_URL:-http://kibana:5601}
AUTH="elastic:${ELASTIC_PASSWORD:?ELASTIC_PASSWORD is not set}"
: "${KIBANA_SYSTEM_PASSWORD:?KIBANA_SYSTEM_PASSWORD is not set}"
TRIES=${SETUP_TRIES:-120}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'logging setup: error: %s\n' "$*" >&2; exit 1; }

# wait_for NAME URL: until URL answers 200 with the elastic user, TRIES times 5 s.
wait_for() {
    n=0
    until [ "$(curl -s -o /dev/null -w '%{http_code}' -u "$AUTH" "$2")" = 200 ]; do
        n=$((n + 1))
        [ "$n" -lt "$TRIES" ] || die "$1 does not answer at $2"
        sleep 5
    done
    log "$1 is up"
}

# put PATH FILE: PUT the JSON FILE to Elasticsearch PATH, failing on an error status.
put() {
    curl -s -f -S -o /dev/null -u "$AUTH" -X PUT -H 'Content-Type: application/json' \
        --data-binary "@$2" "$ES$1" || die "PUT $1 failed"
    log "PUT $1"
}

wait_for Elasticsearch "$ES/_cluster/health?wait_for_status=yellow&timeout=5s"

# The password travels in the request body, built without a shell-quoting round trip.
printf '{"password":"%s"}' "$(printf '%s' "$KIBANA_SYSTEM_PASSWORD" | sed 's/\\/\\\\/g; s/"/\\"/g')" |
    curl -s -f -S -o /dev/null -u "$AUTH" -X POST -H 'Content-Type: application/json' \
        --data-binary @- "$ES/_security/user/kibana_system/_password" || die "setting kibana_system's password failed"
log "kibana_system password set"

put /_ilm/policy/bankcore-logs "$DIR/elasticsearch/ilm-bankcore-logs.json"
put /_ilm/policy/bankcore-audit "$DIR/elasticsearch/ilm-bankcore-audit.json"
put /_index_template/bankcore-app "$DIR/elasticsearch/template-bankcore-app.json"
put /_index_template/bankcore-audit "$DIR/elasticsearch/template-bankcore-audit.json"

wait_for Kibana "$KIBANA/api/status"
answer=$(curl -s -S -u "$AUTH" -X POST -H 'kbn-xsrf: bankcore' \
    --form "file=@$DIR/kibana/saved-objects.ndjson" "$KIBANA/api/saved_objects/_import?overwrite=true") ||
    die "importing the saved objects failed"
case $answer in
    *'"success":true'*) log "Kibana saved objects imported: data views, searches, dashboard 'bankcore overview'" ;;
    *) die "Kibana refused the saved objects: $answer" ;;
esac
