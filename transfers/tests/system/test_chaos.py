"""Self-healing, proved through the real WSGI stack: gunicorn with the production settings and
``manage.py recover_transfers --loop``, each a process of its own, against this run's MariaDB
servers and Redis, while partner clients keep posting cross-ledger transfers (an Idempotency-Key
per transfer, retried under it after a 503 or no answer, as a partner's integration does).

One fault after another: SIGKILL and restart (same port, same data) of the server that holds the
control plane and the first ledger, of the ledger-only server, of Redis; then SIGSTOP of a ledger
server for longer than the lock wait timeout, and SIGCONT. The test never touches the app's
processes or their connections. After each fault it checks that within ``HEAL_BOUND`` seconds of
the server answering again new requests succeed, and that what the outage left pending is finished
or voided within TRANSACTION_TIMEOUT + RECOVERY_INTERVAL_SECONDS; at the end, that the money is
all there, nothing is pending, every key got an answer without a 5xx and every acknowledged
transfer is final as answered, and that ``manage.py reconcile`` is clean.

``bench/chaos.py`` runs the same faults at random for as long as asked."""

from __future__ import annotations

import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.hashers import make_password
from django.db import connections
from django.utils import timezone

from bankcore.testing.chaos import (
    HEAL_BOUND,
    DyingCoordinators,
    Fault,
    PartnerLoad,
    books_read,
    describe,
    heal_time,
    kill_and_restart,
    late_failures,
    outcomes,
    requests_check,
    server_errors,
    settle_time,
    stop_and_continue,
    transfers_unfinished,
)
from bankcore.testing.native import ROOT, Stack, http
from bankcore.testing.personas import api_user
from bankcore.testing.plugin import ledger_servers, redis_server
from bankcore.testing.processes import production_env, run_manage, subprocess_env
from bankcore.testing.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, databases="__all__")]

# Small, so that the bounds are short: a transfer not finished within TRANSACTION_TIMEOUT is voided
# by the recovery loop, which runs every RECOVERY_INTERVAL seconds.
TRANSACTION_TIMEOUT = 4
RECOVERY_INTERVAL = 1
LOCK_WAIT_TIMEOUT = 5  # MYSQL_LOCK_WAIT_TIMEOUT's default, which the app's connections set
# A recovery pass's own time and this test's reading of the books, on a busy two-CPU machine.
SLACK = 2.0
SETTLE = TRANSACTION_TIMEOUT + RECOVERY_INTERVAL + SLACK
WATCH = 2.0
OPENING = Decimal("50000.00")
PASSWORD = "pw-chaos-partner"


class App:
    """gunicorn (deploy/gunicorn.conf.py, production settings) and the recovery loop, started
    once and left alone."""

    def __init__(self, directory: Path) -> None:
        self.stack = Stack(directory)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = production_env(
            directory / "logs",
            GUNICORN_BIND=f"127.0.0.1:{self.port}",
            GUNICORN_WORKERS="2",
            GUNICORN_THREADS="4",
            GUNICORN_LOG_LEVEL="warning",
            TRANSACTION_TIMEOUT=str(TRANSACTION_TIMEOUT),
            RECOVERY_INTERVAL_SECONDS=str(RECOVERY_INTERVAL),
            MYSQL_LOCK_WAIT_TIMEOUT=str(LOCK_WAIT_TIMEOUT),
            API_THROTTLE_USER_RATE="100000/min",
        )

    def start(self) -> None:
        self.stack.start(
            "gunicorn",
            [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "bankcore.wsgi:application"],
            env=self.env,
            cwd=ROOT,
        )
        self.stack.start(
            "recovery",
            [sys.executable, "manage.py", "recover_transfers", "--loop", "--interval", str(RECOVERY_INTERVAL)],
            env=self.env,
            cwd=ROOT,
        )

    def wait_ready(self) -> None:
        self.stack.wait_for("gunicorn /health", lambda: http(f"{self.url}/health").status == 200, timeout=90)

    def workers(self) -> set[int]:
        """gunicorn's worker processes: the same ones at the end, or one of them had to be replaced."""
        master = self.stack.services["gunicorn"].process.pid
        return {int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()}

    def token(self) -> str:
        answer = http(
            f"{self.url}/api/v1/auth/token/", method="POST", body={"username": "chaos-partner", "password": PASSWORD}
        )
        assert answer.status == 200, answer.body
        return str(answer.json()["access"])

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.tail(30)}" for s in self.stack.services.values())


@pytest.fixture
def app(tmp_path):
    if len(ledger_servers()) != 2 or redis_server() is None:
        pytest.skip("needs the two MariaDB servers and the Redis the test plugin starts")
    app = App(tmp_path)
    try:
        yield app
    finally:
        app.stack.stop()


@pytest.fixture
def dying():
    coordinators = DyingCoordinators(env=subprocess_env(TRANSACTION_TIMEOUT=str(TRANSACTION_TIMEOUT)))
    try:
        yield coordinators
    finally:
        coordinators.close()


def test_every_process_heals_after_each_server_fault(app, dying, make_account, ledgers):
    # given the app's processes, funded accounts in both ledgers, all linked to one partner, and
    # two more for the transfers whose coordinators die
    app.start()  # it boots while the accounts are made
    accounts = {ledger: [make_account(ledger, OPENING).number for _ in range(4)] for ledger in ledgers}
    crash_source, crash_destination = make_account("db1", OPENING).number, make_account("db2").number
    opening = {number: OPENING for numbers in accounts.values() for number in numbers}
    partner = api_user("chaos-partner", links=tuple(opening))
    partner.password = make_password(PASSWORD, hasher="pbkdf2_sha256")  # the production hashers
    partner.save(update_fields=["password"])
    before = books_read()
    connections.close_all()
    app.wait_ready()
    workers = app.workers()
    token = app.token()
    load = PartnerLoad(url=app.url, token=lambda: token, accounts=accounts, clients=4, rate=15, give_up_after=45)
    control_plane, ledger_only = ledger_servers()
    redis = redis_server()
    assert redis is not None

    # when the servers fail, one after another, under load
    began = time.monotonic()
    load.start()
    faults: list[Fault] = []
    pending: list[str] = []  # each thing left pending, under the first fault it outlived
    seen: set[str] = set()
    settle_times: list[float | None] = []
    try:
        time.sleep(1.5)
        for inject in (
            lambda: kill_and_restart(control_plane, target="db1 (control plane and ledger)", down=1.5),
            lambda: kill_and_restart(ledger_only, target="db2 (ledger only)", down=1.5),
            lambda: kill_and_restart(redis, target="Redis", down=1.0),
            lambda: stop_and_continue(ledger_only, target="db2 (ledger only)", seconds=LOCK_WAIT_TIMEOUT + 2),
        ):
            # One transfer left PENDING with its debit prepared (voided once its deadline is past),
            # one with its credit decided COMMITTED (finished forward once its grace is past).
            for at in ("after_accept_prepare", "after_decide_credit"):
                dying.transfer(source=crash_source, destination=crash_destination, amount="1.00", at=at)
            faults.append(inject())
            settled, left = settle_time(faults[-1], bound=SETTLE)
            settle_times.append(settled)
            pending += [f"{faults[-1].name}: {what}, {SETTLE:g}s after its return" for what in left if what not in seen]
            seen.update(left)
            # requests made HEAL_BOUND seconds after the return are watched for a while
            time.sleep(max(0.0, faults[-1].back + HEAL_BOUND + WATCH - time.monotonic()))
    finally:
        load.stop()
    ended = time.monotonic()
    connections.close_all()
    # the transfers made after the last fault finish (or are voided) as any transfer does
    deadline = time.monotonic() + SETTLE
    while (left := transfers_unfinished(created_before=timezone.now())) and time.monotonic() < deadline:
        time.sleep(0.5)

    # then
    app.stack.check_running()
    attempts = load.attempts()
    requests = load.snapshot()
    report = [
        f"{len(requests)} transfers, {len(attempts)} requests, {server_errors(attempts)} 5xx or unanswered",
        f"answers: {outcomes(attempts)}",
    ]
    problems: list[str] = []
    for index, (fault, settled) in enumerate(zip(faults, settle_times, strict=True)):
        until = faults[index + 1].injected if index + 1 < len(faults) else ended
        healed = heal_time(fault, attempts)
        late = late_failures(fault, attempts, until=until)
        report.append(
            f"{fault.name} at {fault.injected - began:.1f}s, away {fault.back - fault.injected:.1f}s: healed in "
            f"{'-' if healed is None else f'{healed:.2f}s'}, {len(late)} late failures, "
            f"what it left pending settled in {'-' if settled is None else f'{settled:.2f}s'}"
        )
        if healed is None or healed > HEAL_BOUND:
            problems.append(f"{fault.name}: no request succeeded within {HEAL_BOUND:g}s of its return")
        if late:
            problems.append(
                f"{fault.name}: {len(late)} requests failed {HEAL_BOUND:g}s after its return: {describe(late)}"
            )
    problems += pending
    problems += [f"left unfinished after the load: {what}" for what in left]
    after = books_read()
    if after.posted != before.posted:
        problems.append(f"Σ posted was {before.posted}, is {after.posted}")
    if after.pending:
        problems.append(f"{after.pending} still pending")
    if after.overdrawn:
        problems.append(f"overdrawn: {after.overdrawn}")
    problems += requests_check(requests, opening=opening)
    if app.workers() != workers:
        problems.append(f"gunicorn replaced workers: {sorted(workers)} became {sorted(app.workers())}")
    reconciled = run_manage("reconcile", "--no-progress")
    if reconciled.returncode != 0:
        problems.append(f"manage.py reconcile exited {reconciled.returncode}:\n{reconciled.stdout[-2000:]}")
    print("\n" + "\n".join(report))
    assert not problems, "\n".join(report + problems[:40]) + f"\n{app.logs()}"
    assert sum(1 for a in attempts if a.status == 201) > 50, report
