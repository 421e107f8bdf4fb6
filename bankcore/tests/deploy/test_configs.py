"""The deployment files, checked without a Docker engine: the compose files parse and everything
they name exists and is documented; nginx, Prometheus and the shell scripts (deploy/*.sh, .ci/run)
pass their own tools' checks; every metric the alerts and the dashboard use is exported by the app."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings

from bankcore.testing.deploy import interpolated
from bankcore.testing.native import nginx_command, nginx_config_for, self_signed_certificate, tool
from bankcore.testing.servers import free_port

ROOT = Path(settings.BASE_DIR)
DEPLOY = ROOT / "deploy"
COMPOSE_FILES = ["docker-compose.yml", "docker-compose.scale.yml"]


def compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def env_example_names() -> set[str]:
    """Variables .env.example documents, set (``X=``) or shown commented out (``# X=``)."""
    return set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))


def operations_doc() -> str:
    return (ROOT / "docs" / "operations.md").read_text()


def require(name: str) -> str:
    try:
        return tool(name)
    except RuntimeError as exc:
        pytest.fail(str(exc))


# --- docker compose -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_parses_without_obsolete_keys(name):
    data = compose(name)
    assert "version" not in data  # obsolete in the Compose Specification
    assert data["services"]


def env_example_values() -> dict[str, str]:
    """What a filled-in .env would hold: .env.example's values, and a 40-character secret where it
    leaves one blank (``deploy.sh`` writes random ones)."""
    pairs = re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), re.MULTILINE)
    return {name: value.strip() or "s" * 40 for name, value in pairs}


def compose_spec_refusal(text: str) -> str:
    """Why the Compose Specification refuses the compose file ``text``, interpolated with
    .env.example's values ("" if it conforms). Checked by the compose-spec package (Python bindings
    of the ``compose_spec`` Rust crate; no Docker engine needed). Its parser has no YAML merge keys
    (``<<: *app-env``), so PyYAML resolves them first, and the ``x-`` blocks the anchors live in go."""
    from compose_spec import PyCompose

    data = yaml.safe_load(interpolated(text, env_example_values()))
    data = {key: value for key, value in data.items() if not key.startswith("x-")}
    try:
        PyCompose.from_json(json.dumps(data))
    except ValueError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_conforms_to_the_compose_specification(name):
    assert compose_spec_refusal((ROOT / name).read_text()) == ""


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (("    restart: unless-stopped", "    restrat: unless-stopped"), "restrat"),
        (("condition: service_healthy", "condition: service_healty"), "service_healty"),
        (("      interval:", "      intreval:"), "intreval"),
    ],
    ids=["misspelt-key", "unknown-condition", "misspelt-healthcheck-key"],
)
def test_the_specification_check_refuses_what_compose_would(change, refusal):
    text = (ROOT / "docker-compose.yml").read_text()
    assert change[0] in text
    assert refusal in compose_spec_refusal(text.replace(change[0], change[1], 1))


def test_interpolation_follows_compose():
    env = {"SET": "value", "EMPTY": ""}
    assert (
        interpolated("${SET} ${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $SET $$SET", env)
        == "value value d  d value $SET"
    )
    assert interpolated("${SET:+alt} ${EMPTY:+alt} ${EMPTY+alt} ${UNSET+alt}", env) == "alt  alt "
    assert interpolated("${UNSET:-${SET}}", env) == "value"
    with pytest.raises(ValueError, match="EMPTY is required"):
        interpolated("${EMPTY:?must be set}", env)
    assert interpolated("${EMPTY?must be set}", env) == ""


def test_every_service_named_exists_and_is_documented():
    base = compose()
    services = set(base["services"])
    assert {"banking-app", "celery-worker", "celery-beat", "bank-db1", "bank-db2", "redis", "nginx"} <= services
    assert {"prometheus", "grafana", "mysqld-exporter-db1", "mysqld-exporter-db2", "redis-exporter"} <= services
    for service, spec in base["services"].items():
        for dependency in spec.get("depends_on", {}):
            assert dependency in services, f"{service} depends on unknown service {dependency}"
        # Order by health, never by sleeping: every dependency has a condition.
        for dependency, condition in (spec.get("depends_on") or {}).items():
            assert condition["condition"] in {"service_healthy", "service_completed_successfully"}, (
                f"{service} -> {dependency}"
            )
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source == "/var/lib/docker/containers":
                assert service == "filebeat" and volume.endswith(":ro"), f"{service} mounts the host's {source}"
            elif not source.startswith("."):
                assert source in base["volumes"], f"{service}: undeclared volume {source}"
        for network in spec.get("networks", []):
            assert network in base["networks"]
    assert set(compose("docker-compose.scale.yml")["services"]) <= services
    text = operations_doc()
    for service in services:
        assert f"`{service}`" in text, f"docs/operations.md does not describe the service {service}"


def test_every_file_the_compose_files_name_exists():
    base = compose()
    named: list[str] = []
    for spec in base["services"].values():
        named += [v.split(":")[0] for v in spec.get("volumes", []) if v.startswith(".")]
        if "build" in spec:
            named.append(str(Path(spec["build"]["context"]) / spec["build"]["dockerfile"]))
        command = spec.get("command") or []
        named += [part for part in command if isinstance(part, str) and part.startswith("deploy/")]
    named.append("deploy/gunicorn.conf.py")  # the Dockerfile's CMD
    assert len(named) > 8
    for path in named:
        assert (ROOT / path).exists(), f"{path} is named by docker-compose.yml but does not exist"
    # The Prometheus config names its rule file relative to itself.
    for rule_file in yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).exists()


def test_every_variable_the_compose_files_read_is_documented():
    documented = env_example_names()
    for name in COMPOSE_FILES:
        text = (ROOT / name).read_text()
        used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
        assert used, name
        assert used <= documented, f"{name} reads variables .env.example does not document: {used - documented}"
    # And the variables the containers get (the app reads them) are documented as well.
    containers: set[str] = set()
    for spec in compose()["services"].values():
        if "logging" in spec.get("profiles", []):
            continue  # the images' own settings (discovery.type …); their .env inputs are checked above
        environment = spec.get("environment") or {}
        if isinstance(environment, dict):
            containers |= {key for key in environment if not key.startswith(("MYSQL_", "GF_", "TZ", "REDIS_ADDR"))}
    missing = containers - documented - {"MYSQLD_EXPORTER_PASSWORD"}
    assert not missing, f"container variables not in .env.example: {missing}"


def test_observability_variables_are_documented():
    source = (ROOT / "bankcore" / "settings" / "observability.py").read_text()
    read = set(re.findall(r'env_\w+\("([A-Z][A-Z0-9_]*)"', source))
    assert {"LOG_LEVEL", "LOG_DIR", "CELERY_METRICS_PORT", "CELERY_METRICS_ADDR", "ALLOWED_HOSTS_OWN_ADDRESSES"} <= read
    assert read | {"PROMETHEUS_MULTIPROC_DIR"} <= env_example_names()


def test_every_database_server_has_its_own_server_id():
    # given the MySQL services, which share deploy/mysql/my.cnf
    services = {
        name: spec for name, spec in compose()["services"].items() if str(spec.get("image", "")).startswith("mysql:")
    }
    assert set(services) == {"bank-db1", "bank-db2"}
    cnf = "./deploy/mysql/my.cnf:/etc/mysql/conf.d/bankcore.cnf:ro"
    assert all(cnf in spec["volumes"] for spec in services.values())
    # then the shared file sets no id, and each server's command gives a different one
    settings_lines = [
        line for line in (DEPLOY / "mysql" / "my.cnf").read_text().splitlines() if not line.startswith("#")
    ]
    assert not [line for line in settings_lines if re.match(r"\s*server[-_]id\b", line)]
    ids = {}
    for name, spec in services.items():
        [option] = [part for part in spec["command"] if part.startswith("--server-id=")]
        ids[name] = int(option.split("=", 1)[1])
    assert all(ids.values()), "server id 0 refuses replication"
    assert ids["bank-db1"] != ids["bank-db2"]


# Secrets a deployment may rightly lack (a mail relay without login).
OPTIONAL_SECRETS = {"ALERT_SMTP_PASSWORD"}


def test_secrets_come_from_env_and_nothing_private_is_published():
    base = compose()
    for service, spec in base["services"].items():
        environment = spec.get("environment") or {}
        for key, value in environment.items() if isinstance(environment, dict) else ():
            if re.search("PASSWORD|SECRET", key) and key not in OPTIONAL_SECRETS:
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", str(value)), (
                    f"{service}: {key} is not required from .env"
                )
        ports = spec.get("ports", [])
        if service in {"nginx"}:
            continue
        assert all(str(port).startswith("127.0.0.1:") for port in ports), f"{service} publishes {ports}"


# --- nginx, Prometheus, shell scripts -------------------------------------------------------------


def test_nginx_configuration_is_valid(tmp_path):
    certificate, key = self_signed_certificate(tmp_path)
    config = nginx_config_for(
        tmp_path,
        upstream="127.0.0.1:8000",
        http_port=free_port(),
        https_port=free_port(),
        certificate=certificate,
        key=key,
    )

    result = subprocess.run(
        nginx_command(config, tmp_path, "-t", "-g", f"pid {tmp_path}/nginx.pid;"),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def test_nginx_keeps_metrics_internal():
    text = (DEPLOY / "nginx" / "nginx.conf").read_text()
    block = text[text.index("location ^~ /metrics") :]
    block = block[: block.index("}")]
    assert "deny all;" in block and "allow 127.0.0.1;" in block
    subnet = compose()["networks"]["banking-network"]["ipam"]["config"][0]["subnet"]
    assert f"allow {subnet};" in block


def test_prometheus_configuration_and_rules_are_valid():
    promtool = require("promtool")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"]):
        result = subprocess.run(
            [promtool, *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_app_and_the_celery_workers():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # Every replica, each at its own address (a service-name target would mix the replicas).
    app = jobs["banking-app"]["dns_sd_configs"][0]
    assert app["names"] == ["banking-app"] and app["port"] == 8000
    assert compose()["services"]["banking-app"]["environment"]["ALLOWED_HOSTS_OWN_ADDRESSES"] == "true"
    worker = jobs["celery-worker"]["dns_sd_configs"][0]
    assert worker["names"] == ["celery-worker"] and worker["port"] == 9808
    assert compose()["services"]["celery-worker"]["environment"]["CELERY_METRICS_PORT"] == "9808"
    # The seed scraped MySQL's and Redis' own ports, where nothing speaks Prometheus.
    targets = json.dumps(config)
    assert ":3306" not in targets and "redis:6379" not in targets


# The deploy scripts and the CI entry point (a script without the .sh suffix).
SHELL_SCRIPTS = sorted([*(str(p.relative_to(ROOT)) for p in DEPLOY.rglob("*.sh")), ".ci/run"])


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_script_passes_shellcheck(script):
    path = ROOT / script
    result = subprocess.run(
        [require("shellcheck"), "--severity=style", "--external-sources", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_backup_records_the_binlog_coordinates_of_a_server_that_keeps_a_binlog(tmp_path):
    """The native stack test backs up servers without a binary log (the dump is taken without
    coordinates there); this one has a binary log, as production's my.cnf gives every server."""
    import os

    import MySQLdb

    from bankcore.testing.servers import MariaDBServer

    server = MariaDBServer(tmp_path, "binlog", durable=True)
    server.start()
    try:
        connection = MySQLdb.connect(host="127.0.0.1", port=server.port, user="root", passwd="")
        with connection.cursor() as cursor:
            for database in ("bank_source", "bank_core"):
                cursor.execute(f"CREATE DATABASE {database}")
            cursor.execute("CREATE TABLE bank_source.t (id INT PRIMARY KEY) ENGINE=InnoDB")
            cursor.execute("INSERT INTO bank_source.t VALUES (1)")
            connection.commit()
            cursor.execute("SHOW MASTER STATUS")
            binlog_file, position = cursor.fetchone()[:2]
        connection.close()

        result = subprocess.run(
            ["bash", "deploy/backup.sh", "--native", "--output", str(tmp_path / "backup")],
            env={"PATH": os.environ["PATH"], **server.env("DB1", "bank_source")},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.stop()

    assert result.returncode == 0, result.stderr
    dump = subprocess.run(
        ["gzip", "-dc", str(tmp_path / "backup" / "db1__bank_source.sql.gz")], capture_output=True, text=True
    ).stdout
    comment = f"-- CHANGE MASTER TO MASTER_LOG_FILE='{binlog_file}', MASTER_LOG_POS={position};"
    assert comment in dump.splitlines()  # a comment: restoring the dump does not touch replication
    info = (tmp_path / "backup" / "backup.info").read_text().splitlines()
    assert f"binlog=db1 bank_source {binlog_file} {position}" in info
    assert f"binlog=default bank_core {binlog_file} {position}" in info


# --- The metric contract ----------------------------------------------------------------------------


def metric_names_used() -> set[str]:
    expressions = [
        rule["expr"]
        for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "bankcore.json").read_text())
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    # The app's metrics: bankcore_* and django-prometheus' django_* (the exporters' are not ours).
    return {
        name for expression in expressions for name in re.findall(r"\b((?:bankcore|django)_[a-z0-9_]+)", expression)
    }


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_every_metric_the_alerts_and_dashboard_use_is_exported(client, monkeypatch):
    import sys

    from bankcore.actors import Actor, Channel
    from bankcore.metrics import exposition, record_reconnect, record_recovery, record_task, record_transfer
    from transfers.reconciliation import reconciliation_run

    module = type(sys)("bankcore_test_audit_chain_contract")
    module.audit_chain_status = lambda: True  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(settings, "BANKCORE_AUDIT_CHAIN_STATUS", f"{module.__name__}.audit_chain_status")
    reconciliation_run(actor=Actor.system(Channel.COMMAND, "pytest"))
    record_transfer(kind="transfer", outcome="completed", cross_ledger=True, seconds=0.01)
    record_recovery({"leg_committed": 0})
    record_task(task="transfers.tasks.recover_transfers", state="success")
    record_reconnect(alias="db1")
    from bankcore.heartbeat import beat_heartbeat

    beat_heartbeat.apply()
    assert client.get("/health").status_code in {200, 503}

    exported = exposition().decode()
    names = {line.split("{")[0].split(" ")[0] for line in exported.splitlines() if line and not line.startswith("#")}

    used = metric_names_used()
    assert "bankcore_transfers_stuck" in used and "bankcore_transfer_duration_seconds_bucket" in used
    assert used <= names, f"not exported: {used - names}"


def test_a_replica_scraped_at_its_own_address_is_answered(tmp_path):
    """Prometheus reaches each app replica by IP: that Host must be allowed when asked for."""
    import os
    import socket
    import sys

    from bankcore.settings.observability import own_addresses

    assert "127.0.0.1" in own_addresses("localhost")
    code = "import django; django.setup(); from django.conf import settings; print(settings.ALLOWED_HOSTS)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bankcore.settings.test", "ALLOWED_HOSTS": "example.org"}
    plain = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    own = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "ALLOWED_HOSTS_OWN_ADDRESSES": "true"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.stdout.strip() == "['example.org']", plain.stderr
    assert own.stdout.strip() == str(["example.org", *own_addresses(socket.gethostname())]), own.stderr
