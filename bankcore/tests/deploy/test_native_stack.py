"""The production stack, natively: deploy/nginx/nginx.conf (TLS, self-signed certificate),
deploy/gunicorn.conf.py with the production settings, a Celery worker and beat, and Prometheus
with deploy/prometheus/prometheus.yml pointed at loopback, all against this test run's MariaDB
ledger servers and Redis. A transfer goes through the Partner API, /metrics shows it, Prometheus scrapes the app
and the worker, the logs are JSON lines that share the request id, and deploy/backup.sh then
deploy/restore.sh --force (--native) round-trip the ledgers with the reconciliation clean.

One module-scoped stack (start ≈ 10 s); the steps are one test, in order, because each needs
the state the previous one left."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import connections
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AuditEvent
from bankcore.actors import Actor, Channel
from bankcore.testing.books import balances
from bankcore.testing.native import (
    ROOT,
    Stack,
    http,
    json_lines,
    nginx_command,
    nginx_config_for,
    prometheus_config_for,
    self_signed_certificate,
    tool,
)
from bankcore.testing.personas import api_user
from bankcore.testing.plugin import ledger_servers, redis_server
from bankcore.testing.processes import production_env, subprocess_env
from bankcore.testing.servers import free_port
from transfers.services import transfer_create

pytestmark = [pytest.mark.slow, pytest.mark.ledgers3, pytest.mark.django_db(transaction=True, databases="__all__")]

BIN = Path(sys.executable).parent


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class NativeStack:
    def __init__(self, directory: Path) -> None:
        if not ledger_servers() or redis_server() is None:
            pytest.skip("needs the MariaDB and Redis servers the test plugin starts")
        self.dir = directory
        self.stack = Stack(directory)
        self.app_port, self.http_port, self.https_port = free_port(), free_port(), free_port()
        self.worker_metrics_port, self.prometheus_port = free_port(), free_port()
        self.certificate, self.key = self_signed_certificate(directory)
        self.logs = directory / "logs"
        self.app_metrics = directory / "metrics-gunicorn"
        self.worker_metrics = directory / "metrics-celery"
        self.env = production_env(
            self.logs,
            ALLOWED_HOSTS="localhost,127.0.0.1",
            CSRF_TRUSTED_ORIGINS=f"https://localhost:{self.https_port}",
            LOG_LEVEL="INFO",
            GUNICORN_BIND=f"127.0.0.1:{self.app_port}",
            GUNICORN_WORKERS="2",
            GUNICORN_THREADS="2",
            PROMETHEUS_MULTIPROC_DIR=str(self.app_metrics),
            CELERY_METRICS_PORT=str(self.worker_metrics_port),
            CELERY_METRICS_ADDR="127.0.0.1",
            RECOVERY_INTERVAL_SECONDS="1",
            PATH=f"{BIN}:{subprocess_env()['PATH']}",
        )
        self.worker_env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(self.worker_metrics)}

    @property
    def https(self) -> str:
        return f"https://localhost:{self.https_port}"

    def get(self, path: str, **kwargs: Any) -> Any:
        return http(self.https + path, cafile=self.certificate, **kwargs)

    def start(self) -> None:
        self.stack.start(
            "gunicorn",
            [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "bankcore.wsgi:application"],
            env=self.env,
        )
        self.stack.start(
            "celery-worker",
            [str(BIN / "celery"), "-A", "bankcore", "worker", "-l", "info", "-c", "1", "-n", "native@%h"],
            env=self.worker_env,
        )
        self.stack.start(
            "celery-beat",
            [str(BIN / "celery"), "-A", "bankcore", "beat", "-l", "info", "-s", str(self.dir / "beat-schedule")],
            env=self.env,
        )
        config = nginx_config_for(
            self.dir,
            upstream=f"127.0.0.1:{self.app_port}",
            http_port=self.http_port,
            https_port=self.https_port,
            certificate=self.certificate,
            key=self.key,
        )
        self.stack.start(
            "nginx", nginx_command(config, self.dir, "-g", f"daemon off; pid {self.dir}/nginx.pid;"), env=self.env
        )
        (self.dir / "prometheus-data").mkdir()
        prometheus_config = prometheus_config_for(
            self.dir,
            {
                "banking-app": [f"127.0.0.1:{self.app_port}"],
                "celery-worker": [f"127.0.0.1:{self.worker_metrics_port}"],
                "prometheus": [f"127.0.0.1:{self.prometheus_port}"],
            },
        )
        self.stack.start(
            "prometheus",
            [
                tool("prometheus"),
                f"--config.file={prometheus_config}",
                f"--storage.tsdb.path={self.dir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            ],
            env=self.env,
        )
        self.stack.wait_for("nginx -> gunicorn /health", lambda: self.get("/health").status == 200, timeout=90)
        self.stack.wait_for(
            "the Celery worker's metrics endpoint",
            lambda: http(f"http://127.0.0.1:{self.worker_metrics_port}/metrics").status == 200,
            timeout=90,
        )

    def stop(self, *names: str) -> None:
        self.stack.stop(*names)

    def script(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", *args],
            env={**self.env, "DJANGO_SETTINGS_MODULE": "bankcore.settings.test", "PYTHON": sys.executable},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )


@pytest.fixture
def native(tmp_path_factory):
    stack = NativeStack(tmp_path_factory.mktemp("native-stack"))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        connections.close_all()


def transfer_through_the_api(native: NativeStack, source: str, destination: str, amount: str, key: str) -> Any:
    """The Partner API through nginx over HTTPS: a token for the partner, then the transfer."""
    token = native.get(
        "/api/v1/auth/token/", method="POST", body={"username": "native-partner", "password": "pw-native-partner"}
    )
    assert token.status == 200, token.body
    return native.get(
        "/api/v1/transfers/",
        method="POST",
        body={"source_account": source, "destination_account": destination, "amount": amount},
        headers={"Authorization": f"Bearer {token.json()['access']}", "Idempotency-Key": key},
    )


def test_native_stack(native, make_account, ledgers):
    source, destination = make_account(ledgers[0], "100.00"), make_account(ledgers[-1])

    # --- TLS front door: HTTP redirects, HTTPS carries the security headers and a request id.
    redirect = http(f"http://127.0.0.1:{native.http_port}/health")
    assert redirect.status == 301 and redirect.headers["Location"] == f"https://127.0.0.1:{native.https_port}/health"
    health = native.get("/health")
    assert health.status == 200
    assert "max-age=" in health.headers["Strict-Transport-Security"]
    request_id = health.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    # An account number in the URL (path and query): the access logs keep its last 4 digits only.
    probe = native.get(f"/api/v1/accounts/{source.number}/?account={source.number}")
    assert probe.status == 401

    # --- A transfer through the Partner API; retried with its key, it moves nothing more.
    partner = api_user("native-partner", links=(source.number,))
    # The suite hashes with MD5 (fast); gunicorn runs the production settings, which do not accept it.
    partner.password = make_password("pw-native-partner", hasher="pbkdf2_sha256")
    partner.save(update_fields=["password"])
    created = transfer_through_the_api(native, source.number, destination.number, "12.50", "native-1")
    assert created.status == 201, created.body
    assert created.json()["status"] == "completed"
    transfer_request_id = created.headers["X-Request-ID"]
    replayed = transfer_through_the_api(native, source.number, destination.number, "12.50", "native-1")
    assert replayed.json()["id"] == created.json()["id"]
    assert balances(source, destination) == [Decimal("87.50"), Decimal("12.50")]
    # The audit events of the request carry the request id nginx gave it.
    events = AuditEvent.objects.filter(object_id=created.json()["id"])
    assert events and {event.request_id for event in events} == {transfer_request_id}

    # --- /metrics (through nginx, from loopback) shows it, with the state gauges.
    metrics = native.get("/metrics")
    assert metrics.status == 200
    scraped = samples(metrics.body.decode())
    assert scraped[("bankcore_transfers_total", (("kind", "transfer"), ("outcome", "completed")))] >= 1
    for alias in ledgers:
        assert scraped[("bankcore_ledger_up", (("ledger", alias),))] == 1
    assert scraped[("bankcore_transfers_stuck", ())] == 0

    # --- The Celery worker runs beat's recovery ticks and counts them on its own endpoint.
    def recoveries() -> float:
        body = http(f"http://127.0.0.1:{native.worker_metrics_port}/metrics").body.decode()
        key = ("bankcore_celery_tasks_total", (("state", "success"), ("task", "transfers.tasks.recover_transfers")))
        return samples(body).get(key, 0)

    native.stack.wait_for("a recovery task run by the worker", lambda: recoveries() >= 1, timeout=60)

    # --- Prometheus (the project's config, loopback targets) scrapes the app and the worker.
    def targets_up() -> bool:
        answer = http(f"http://127.0.0.1:{native.prometheus_port}/api/v1/targets").json()
        health = {t["labels"]["job"]: t["health"] for t in answer["data"]["activeTargets"]}
        return health.get("banking-app") == "up" and health.get("celery-worker") == "up"

    def transfers_seen_by_prometheus() -> bool:
        query = http(f"http://127.0.0.1:{native.prometheus_port}/api/v1/query?query=bankcore_transfers_total").json()
        return query["status"] == "success" and any(float(r["value"][1]) >= 1 for r in query["data"]["result"])

    native.stack.wait_for("Prometheus targets up", targets_up, timeout=60)
    native.stack.wait_for("the transfer in Prometheus", transfers_seen_by_prometheus, timeout=30)
    rules = http(f"http://127.0.0.1:{native.prometheus_port}/api/v1/rules").json()
    assert len([r for g in rules["data"]["groups"] for r in g["rules"]]) >= 10

    # --- Logs: JSON lines; gunicorn's access line carries nginx's request id.
    native.stop("nginx", "prometheus", "celery-beat", "celery-worker", "gunicorn")
    access = [line for line in json_lines(native.dir.joinpath("gunicorn.out").read_text()) if "status" in line]
    assert any(line["request_id"] == request_id and line["path"] == "/health" for line in access), access[-5:]
    assert any(
        line["request_id"] == transfer_request_id and line["path"] == "/api/v1/transfers/" and line["status"] == 201
        for line in access
    )
    assert all(line["logger"] == "gunicorn.access" for line in access)
    nginx_access = [line for line in json_lines(native.dir.joinpath("nginx.out").read_text()) if "uri" in line]
    assert any(line["uri"] == f"/api/v1/accounts/**********{source.number[-4:]}/" for line in nginx_access)
    for log in ("nginx.out", "gunicorn.out"):
        assert source.number not in native.dir.joinpath(log).read_text(), log
    log_file = native.logs / "banking.log"
    file_lines = json_lines(log_file.read_text())
    assert file_lines and len(file_lines) == len(log_file.read_text().splitlines())
    assert {"time", "level", "logger", "message", "request_id"} <= set(file_lines[0])

    # --- Backup, a change, restore: the change is gone and the books balance.
    connections.close_all()
    backup = native.script("deploy/backup.sh", "--native", "--output", str(native.dir / "backup"))
    assert backup.returncode == 0, backup.stderr
    assert (native.dir / "backup" / "SHA256SUMS").exists()
    dumps = sorted(p.name for p in (native.dir / "backup").glob("*.sql.gz"))
    assert [d.split("__")[0] for d in dumps] == sorted([*ledgers, "default"])

    transfer_create(
        actor=Actor.system(Channel.COMMAND, "after-backup"),
        source_account=source.number,
        destination_account=destination.number,
        amount="30.00",
    )
    assert balances(source, destination) == [Decimal("57.50"), Decimal("42.50")]
    connections.close_all()

    refused = native.script("deploy/restore.sh", str(native.dir / "backup"), "--native")
    assert refused.returncode != 0 and "refusing to restore without --force" in refused.stderr
    restored = native.script("deploy/restore.sh", str(native.dir / "backup"), "--force", "--native")

    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "reconciliation is clean" in restored.stderr
    assert balances(source, destination) == [Decimal("87.50"), Decimal("12.50")]


def test_restore_refuses_a_damaged_backup(tmp_path):
    # given a backup whose dump was changed after its checksum was taken
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "db1__bank_source.sql.gz").write_bytes(b"not what was dumped")
    subprocess.run(["sha256sum", "db1__bank_source.sql.gz"], cwd=backup, check=True, capture_output=True)
    (backup / "SHA256SUMS").write_text("0" * 64 + "  db1__bank_source.sql.gz\n")

    result = subprocess.run(
        ["bash", "deploy/restore.sh", str(backup), "--force", "--native"],
        env=subprocess_env(),
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "checksum verification failed" in result.stderr
