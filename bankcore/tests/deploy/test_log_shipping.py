"""Log aggregation (the compose profile `logging`): Filebeat's, Elasticsearch's and Kibana's
configuration. Neither Filebeat, Elasticsearch nor Kibana is packaged by Debian or PyPI, so their
files are checked by parsing them and cross-checking what they name; the one-shot setup job
(deploy/logging/setup.sh) runs for real against a stand-in for the two HTTP APIs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
LOGGING = ROOT / "deploy" / "logging"
PROFILE = {"elasticsearch", "logging-setup", "kibana", "filebeat"}


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def saved_objects() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (LOGGING / "kibana" / "saved-objects.ndjson").read_text().splitlines()]


def megabytes(limit: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([mg])", limit).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "g" else 1)


def test_the_logging_profile_is_optional_and_fits_the_host():
    services = compose()["services"]
    in_profile = {name for name, spec in services.items() if "logging" in spec.get("profiles", [])}
    assert in_profile == PROFILE
    # Nothing outside the profile depends on it: `docker compose up -d` starts without it.
    for name, spec in services.items():
        if name not in PROFILE:
            assert not set(spec.get("depends_on") or {}) & PROFILE, name
    # Bounded memory: 3.3 GB at most for the whole stack, Elasticsearch's heap half its limit.
    limits = {name: megabytes(services[name]["mem_limit"]) for name in PROFILE}
    assert sum(limits.values()) <= 3400, limits
    assert "-Xms1g -Xmx1g" in services["elasticsearch"]["environment"]["ES_JAVA_OPTS"]
    assert limits["elasticsearch"] == 2048
    # Only Kibana is published, on loopback; Elasticsearch stays on the compose network.
    assert services["kibana"]["ports"] == ["127.0.0.1:${KIBANA_PORT:-5601}:5601"]
    assert "ports" not in services["elasticsearch"] and "ports" not in services["filebeat"]


def test_filebeat_reads_the_app_audit_and_nginx_lines_without_the_docker_socket():
    filebeat = compose()["services"]["filebeat"]
    assert "app_logs:/app/logs:ro" in filebeat["volumes"]
    assert "/var/lib/docker/containers:/var/lib/docker/containers:ro" in filebeat["volumes"]
    assert not any("docker.sock" in volume for volume in filebeat["volumes"])
    assert "./deploy/logging/filebeat.yml:/usr/share/filebeat/filebeat.yml:ro" in filebeat["volumes"]
    # The app writes the files Filebeat reads into that volume.
    assert "app_logs:/app/logs" in compose()["services"]["banking-app"]["volumes"]

    config = yaml.safe_load((LOGGING / "filebeat.yml").read_text())
    inputs = {item["id"]: item for item in config["filebeat.inputs"]}
    assert inputs["bankcore-app"]["paths"] == ["/app/logs/banking.log*"]
    # The rotated files are read too, and an audit file renamed before it was read to its end is
    # read on: the audit lines are shipped before rotation drops them.
    audit = inputs["bankcore-audit"]
    assert audit["paths"] == ["/app/logs/audit.log*"]
    assert audit["close.on_state_change.renamed"] is False and audit["close.on_state_change.removed"] is False
    for source in ("bankcore-app", "bankcore-audit"):
        assert inputs[source]["parsers"][0]["ndjson"]["target"] == ""
    nginx = inputs["docker-nginx"]
    assert nginx["parsers"][0]["container"]["format"] == "docker"
    # nginx's access line is the one with "upstream_addr" (deploy/nginx/nginx.conf's log_format)
    assert '"upstream_addr":"$upstream_addr"' in (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    assert nginx["processors"][0]["drop_event"]["when"]["not"]["contains"]["message"] == '"upstream_addr"'
    # One index family per source, each with a template and a retention
    assert config["output.elasticsearch"]["index"] == "bankcore-%{[log_type]}-%{+yyyy.MM.dd}"
    log_types = {item["fields"]["log_type"] for item in inputs.values()}
    assert log_types == {"app", "audit", "nginx"}
    patterns = {
        pattern
        for path in (LOGGING / "elasticsearch").glob("template-*.json")
        for pattern in json.loads(path.read_text())["index_patterns"]
    }
    assert {f"bankcore-{log_type}-*" for log_type in log_types} <= patterns


def test_index_templates_name_existing_lifecycle_policies():
    policies = {path.stem.removeprefix("ilm-") for path in (LOGGING / "elasticsearch").glob("ilm-*.json")}
    assert policies == {"bankcore-logs", "bankcore-audit"}
    for path in (LOGGING / "elasticsearch").glob("template-*.json"):
        template = json.loads(path.read_text())
        assert template["template"]["settings"]["index.lifecycle.name"] in policies
    audit = json.loads((LOGGING / "elasticsearch" / "ilm-bankcore-audit.json").read_text())
    assert audit["policy"]["phases"]["delete"]["min_age"] == "400d"  # audit kept longer than logs
    setup = (LOGGING / "setup.sh").read_text()
    for name in policies:
        assert f"/_ilm/policy/{name} " in setup
    # The audit file's fields (audit/services.py _file_record) are mapped as keywords
    mapping = json.loads((LOGGING / "elasticsearch" / "template-bankcore-audit.json").read_text())
    properties = mapping["template"]["mappings"]["properties"]
    assert {"action", "actor", "channel", "object_type", "request_id"} <= set(properties)
    assert properties["changes"]["type"] == "flattened"  # any change's keys, without mapping conflicts


def test_kibana_saved_objects_reference_what_exists():
    objects = saved_objects()
    by_id = {(item["type"], item["id"]): item for item in objects}
    titles = {item["attributes"]["title"] for item in objects}
    assert {"bankcore-app-*", "bankcore-audit-*", "bankcore-nginx-*"} <= titles
    assert {"bankcore errors", "bankcore transfers", "bankcore audit events", "bankcore overview"} <= titles
    assert {"Errors over time", "Transfers by status", "Audit events by actor"} <= titles
    for item in objects:
        for reference in item["references"]:
            assert (reference["type"], reference["id"]) in by_id, (item["id"], reference)
    mappings: dict[str, set[str]] = {}
    for path in (LOGGING / "elasticsearch").glob("template-*.json"):
        template = json.loads(path.read_text())
        fields = set()
        for name, spec in template["template"]["mappings"]["properties"].items():
            fields.add(name)
            fields |= {f"{name}.{sub}" for sub in spec.get("properties", {})}
        for pattern in template["index_patterns"]:
            mappings[pattern.removesuffix("*")] = fields
    # every field a visualization aggregates on is mapped (keyword/number) in its index template
    for item in objects:
        if item["type"] != "visualization":
            continue
        state = json.loads(item["attributes"]["visState"])
        [index] = [r["id"] for r in item["references"]]
        pattern = by_id[("index-pattern", index)]["attributes"]["title"].removesuffix("*")
        for aggregation in state["aggs"]:
            field = aggregation["params"].get("field")
            if field:
                assert field in mappings[pattern] or field == "@timestamp", (item["id"], field)
    dashboard = by_id[("dashboard", "bankcore-overview")]
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    assert {panel["panelRefName"] for panel in panels} == {r["name"] for r in dashboard["references"]}


class FakeElastic(BaseHTTPRequestHandler):
    """Elasticsearch and Kibana as setup.sh sees them: 200 for everything, the import a success."""

    calls: list[tuple[str, str, dict[str, str], bytes]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.calls.append((self.command, self.path, dict(self.headers), body))
        answer = b'{"success":true,"successCount":11}' if "_import" in self.path else b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_PUT = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


def test_setup_job_installs_policies_templates_and_saved_objects():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeElastic)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeElastic.calls = []
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = subprocess.run(
            ["sh", str(LOGGING / "setup.sh")],
            env={
                "PATH": os.environ["PATH"],
                "ELASTICSEARCH_URL": url,
                "KIBANA_URL": url,
                "ELASTIC_PASSWORD": "elastic-secret",
                "KIBANA_SYSTEM_PASSWORD": 'k"ibana\\secret',
                "SETUP_TRIES": "2",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    calls = [(method, path.split("?")[0]) for method, path, _, _ in FakeElastic.calls]
    assert ("POST", "/_security/user/kibana_system/_password") in calls
    for path in (
        "/_ilm/policy/bankcore-logs",
        "/_ilm/policy/bankcore-audit",
        "/_index_template/bankcore-app",
        "/_index_template/bankcore-audit",
    ):
        assert ("PUT", path) in calls
    [password] = [body for method, path, _, body in FakeElastic.calls if path.endswith("_password")]
    assert json.loads(password) == {"password": 'k"ibana\\secret'}
    [(headers, body)] = [(h, b) for m, p, h, b in FakeElastic.calls if p.startswith("/api/saved_objects/_import")]
    assert headers["kbn-xsrf"] and b"bankcore-overview" in body
    assert all(h.get("Authorization", "").startswith("Basic ") for _, _, h, _ in FakeElastic.calls)


def test_setup_job_fails_when_kibana_refuses_the_objects():
    class Refusing(FakeElastic):
        def _answer(self) -> None:
            if "_import" in self.path:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = b'{"success":false,"errors":[{"id":"x"}]}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                return
            super()._answer()

        do_GET = do_PUT = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        result = subprocess.run(
            ["sh", str(LOGGING / "setup.sh")],
            env={
                "PATH": os.environ["PATH"],
                "ELASTICSEARCH_URL": url,
                "KIBANA_URL": url,
                "ELASTIC_PASSWORD": "e",
                "KIBANA_SYSTEM_PASSWORD": "k",
                "SETUP_TRIES": "2",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
    assert result.returncode != 0 and "refused the saved objects" in result.stderr
