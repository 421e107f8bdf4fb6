"""/metrics: the business metrics of the contract in deploy/prometheus/alerts.yml, read from real
ledgers; multiprocess mode as gunicorn and the Celery worker run it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from bankcore.actors import Actor, Channel
from bankcore.metrics import ledgers_up, worker_metrics_server
from bankcore.testing.servers import free_port
from transfers.models import Transfer
from transfers.reconciliation import reconciliation_run
from transfers.recovery import transfers_recover
from transfers.services import transfer_create

pytestmark = [pytest.mark.ledgers3, pytest.mark.django_db(transaction=True, databases="__all__")]


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_exports_state_of_a_quiet_system(client, ledgers):
    samples = scrape(client)

    for alias in ledgers:
        assert value(samples, "bankcore_ledger_up", ledger=alias) == 1.0
    assert value(samples, "bankcore_transfers_in_flight", status="pending") == 0
    assert value(samples, "bankcore_transfers_in_flight", status="committed") == 0
    assert value(samples, "bankcore_transfers_in_flight_amount", currency=settings.DEFAULT_CURRENCY) == 0
    assert value(samples, "bankcore_transfers_stuck") == 0
    # No reconciliation has run yet: no made-up "0 discrepancies".
    assert value(samples, "bankcore_reconciliation_discrepancies") is None


def test_a_transfer_is_counted_and_timed(client, make_account, ledgers):
    source, destination = make_account(ledgers[0], "100.00"), make_account(ledgers[-1])
    before = scrape(client)
    labels = {"kind": "transfer", "outcome": "completed"}

    transfer_create(
        actor=Actor.system(Channel.API, "metrics"),
        source_account=source.number,
        destination_account=destination.number,
        amount="12.50",
    )

    after = scrape(client)
    assert (value(after, "bankcore_transfers_total", **labels) or 0) == (
        value(before, "bankcore_transfers_total", **labels) or 0
    ) + 1
    count = {"kind": "transfer", "scope": "cross_ledger" if len(ledgers) > 1 else "same_ledger"}
    assert (value(after, "bankcore_transfer_duration_seconds_count", **count) or 0) == (
        value(before, "bankcore_transfer_duration_seconds_count", **count) or 0
    ) + 1
    # django-prometheus counts the responses by status (the 5xx alert's input).
    assert (value(after, "django_http_responses_total_by_status_total", status="200") or 0) >= 1


def test_a_transfer_ended_by_recovery_is_counted_once_by_its_outcome(client, make_account, make_stuck_transfer):
    # given a cross-ledger transfer its coordinator left PENDING past its deadline, debit held
    source, destination = make_account("db1", "100.00"), make_account("db2")
    make_stuck_transfer(source, destination)
    labels = {"kind": "transfer", "outcome": "transfer_timed_out"}
    before = value(scrape(client), "bankcore_transfers_total", **labels) or 0

    transfers_recover(grace_seconds=0)
    transfers_recover(grace_seconds=0)  # a second pass finds nothing to end, and counts nothing

    assert value(scrape(client), "bankcore_transfers_total", **labels) == before + 1


def test_in_flight_and_stuck_transfers(client, make_account, ledgers):
    # given a transfer left PENDING just past its deadline (recovery has not run yet)
    source, destination = make_account(ledgers[0]), make_account(ledgers[-1])
    now = timezone.now()
    Transfer.objects.create(
        source_account=source.number,
        source_ledger=source.ledger,
        destination_account=destination.number,
        destination_ledger=destination.ledger,
        amount=Decimal("7.25"),
        currency=settings.DEFAULT_CURRENCY,
        client_id="test:metrics",
        request_hash="0" * 64,
        business_date=timezone.localdate(),
        deadline=now - timedelta(seconds=1),
        channel=Channel.API,
    )

    samples = scrape(client)

    assert value(samples, "bankcore_transfers_in_flight", status="pending") == 1
    assert value(samples, "bankcore_transfers_in_flight_amount", currency=settings.DEFAULT_CURRENCY) == 7.25
    assert value(samples, "bankcore_transfers_stuck") == 1


def test_last_reconciliation(client):
    reconciliation_run(actor=Actor.system(Channel.COMMAND, "pytest"))

    samples = scrape(client)

    assert value(samples, "bankcore_reconciliation_discrepancies") == 0
    last_run = value(samples, "bankcore_reconciliation_last_run_timestamp_seconds")
    assert last_run is not None and abs(time.time() - last_run) < 60


@contextlib.contextmanager
def ledger_port(alias: str, port: int) -> Iterator[None]:
    """Point ``alias`` at ``port`` for the block only: the autouse reconciliation check after the
    test (torn down before ``monkeypatch`` is undone) must reach the real server again."""
    connection = connections[alias]
    real = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(port)
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["PORT"] = real


def test_a_ledger_that_does_not_answer_is_down_and_the_rest_still_exported(client, ledgers):
    # given the last ledger's address pointing at a closed port
    with ledger_port(ledgers[-1], free_port()):
        samples = scrape(client)

    assert value(samples, "bankcore_ledger_up", ledger=ledgers[-1]) == 0.0
    assert value(samples, "bankcore_ledger_up", ledger=ledgers[0]) == 1.0
    assert value(samples, "bankcore_transfers_stuck") == 0


def test_a_ledger_that_hangs_is_down_within_the_probe_timeout(ledgers):
    # given a "server" that accepts TCP connections and never says a word
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        with ledger_port(ledgers[-1], silent.getsockname()[1]):
            started = time.monotonic()

            up = ledgers_up(ledgers)

        assert up[ledgers[-1]] is False
        assert up[ledgers[0]] is True
        assert time.monotonic() - started < 3.0


def test_audit_chain_status_comes_from_the_audit_app(client, monkeypatch):
    module = type(sys)("bankcore_test_audit_chain")
    module.audit_chain_status = lambda: False  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(settings, "BANKCORE_AUDIT_CHAIN_STATUS", f"{module.__name__}.audit_chain_status")
    assert value(scrape(client), "bankcore_audit_chain_ok") == 0.0

    module.audit_chain_status = lambda: True  # type: ignore[attr-defined]
    assert value(scrape(client), "bankcore_audit_chain_ok") == 1.0

    # Not provided (yet): the gauge is left out, the scrape still works.
    monkeypatch.setattr(settings, "BANKCORE_AUDIT_CHAIN_STATUS", "bankcore_no_such_module.audit_chain_status")
    assert value(scrape(client), "bankcore_audit_chain_ok") is None


def test_celery_task_gets_a_request_id_and_is_counted(monkeypatch):
    from bankcore.logging import current_request_id
    from bankcore.metrics import exposition
    from transfers.recovery import RecoveryReport
    from transfers.tasks import recover_transfers

    seen: list[str] = []

    def fake_recover(**_):
        seen.append(current_request_id())
        return RecoveryReport()

    monkeypatch.setattr("transfers.recovery.transfers_recover", fake_recover)
    labels = {"task": "transfers.tasks.recover_transfers", "state": "success"}
    before = value(parse(exposition(state=False).decode()), "bankcore_celery_tasks_total", **labels) or 0
    task_id = uuid.uuid4().hex

    recover_transfers.apply(task_id=task_id)

    assert seen == [task_id]
    assert current_request_id() == ""
    assert value(parse(exposition(state=False).decode()), "bankcore_celery_tasks_total", **labels) == before + 1


def test_worker_metrics_endpoint():
    port = free_port()
    server, thread = worker_metrics_server(port, addr="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert "bankcore_recovery_actions_total" in body
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_multiprocess_mode_adds_up_every_process(tmp_path):
    """gunicorn workers and Celery pool processes each count in files; /metrics sums them."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    count = textwrap.dedent(
        """
        from bankcore.metrics import record_recovery, record_transfer
        record_transfer(kind="transfer", outcome="completed", cross_ledger=True, seconds=0.01)
        record_recovery({"leg_committed": 2})
        """
    )
    for _ in range(3):
        subprocess.run([sys.executable, "-c", count], env=env, cwd=settings.BASE_DIR, check=True, timeout=60)
    read = "import sys; from bankcore.metrics import exposition; sys.stdout.write(exposition(state=False).decode())"

    output = subprocess.run(
        [sys.executable, "-c", read], env=env, cwd=settings.BASE_DIR, check=True, timeout=60, capture_output=True
    ).stdout.decode()

    samples = parse(output)
    assert value(samples, "bankcore_transfers_total", kind="transfer", outcome="completed") == 3
    assert value(samples, "bankcore_recovery_actions_total", action="leg_committed") == 6
    assert value(samples, "bankcore_transfer_duration_seconds_count", kind="transfer", scope="cross_ledger") == 3


def test_django_prometheus_counts_each_request_by_its_labels(client):
    before = scrape(client)
    for _ in range(3):
        assert client.get("/health").status_code == 200
    assert client.get("/no-such-page").status_code == 404

    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    # each scrape is a 200 too: the one before is counted by the one after
    assert grew("django_http_responses_total_by_status_total", status="200") == 4
    assert grew("django_http_responses_total_by_status_total", status="404") == 1
    assert grew("django_http_requests_total_by_method_total", method="GET") == 5
