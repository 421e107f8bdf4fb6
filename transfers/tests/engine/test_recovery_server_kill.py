"""A ledger's server is killed (SIGKILL) in the middle of a run of transfers and restarted.
After recovery every invariant holds and no transfer is left unfinished."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from bankcore.actors import Actor, Channel
from bankcore.errors import ApplicationError
from bankcore.testing.books import balances
from bankcore.testing.plugin import ledger_servers
from transfers.models import Transfer
from transfers.reconciliation import reconcile
from transfers.recovery import transfers_recover_pass
from transfers.services import transfer_create

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]


@pytest.mark.parametrize("victim", [1, 0], ids=["ledger-only-server", "server-with-control-plane"])
def test_ledger_server_killed_mid_run(make_account, ledgers, victim):
    accounts = [make_account(ledgers[i % len(ledgers)], "1000.00") for i in range(12)]
    numbers = [a.number for a in accounts]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def work(index: int) -> None:
        rng = random.Random(index)
        actor = Actor.system(Channel.API, f"kill-{index}")
        try:
            while not stop.is_set():
                # No request boundaries here: a connection that failed is checked before its next
                # use wherever that is (bankcore.mysql_backend), and replaced if it is dead.
                source, destination = rng.sample(numbers, 2)
                try:
                    outcome = transfer_create(
                        actor=actor,
                        source_account=source,
                        destination_account=destination,
                        amount=Decimal(rng.randint(1, 5000)) / 100,
                    ).status
                except ApplicationError as error:
                    outcome = error.code
                except DatabaseError as error:  # a dead connection outside the engine's own guard
                    outcome = f"db:{type(error).__name__}"
                    time.sleep(0.05)
                with lock:
                    outcomes[outcome] += 1
        finally:
            connections.close_all()  # the thread ends: its connections go with it

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    server = ledger_servers()[victim]
    time.sleep(1.0)
    server.kill()
    time.sleep(1.0)
    server.start()
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)

    # This process's own connections to the restarted server are dead: recovery's passes find
    # that out and reconnect themselves.
    later = timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT + 5)
    for _ in range(3):
        report = transfers_recover_pass(now=later, grace_seconds=0)
        assert not report.errors, report.errors
    assert not Transfer.objects.exclude(status__in=[Transfer.Status.COMPLETED, Transfer.Status.ABORTED]).exists()
    assert sum(balances(*accounts)) == Decimal("12000.00")
    books = reconcile(now=later)
    assert books.ok, books.discrepancies
    assert outcomes["completed"] > 0
    print(f"\nkilled server {victim + 1}: {dict(outcomes)}")


def _cross_transfer(source, destination, *, deadline_in: float) -> Transfer:
    return Transfer.objects.create(
        source_account=source.number,
        source_ledger=source.ledger,
        destination_account=destination.number,
        destination_ledger=destination.ledger,
        amount=Decimal("30.00"),
        currency="CNY",
        client_id="kill",
        request_hash="x",
        business_date=timezone.localdate(),
        deadline=timezone.now() + timedelta(seconds=deadline_in),
        channel="system",
    )


def _wait_for(condition, timeout: float) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.1)
    return time.monotonic() - started


def test_the_recovery_loop_reconnects_after_a_ledger_server_restart_and_finishes_what_is_left(make_account):
    """``recover_transfers --loop`` as its own process: its connections to a ledger server die with
    the server (SIGKILL), and once the server is back the loop's next passes reconnect by
    themselves and finish the transfers left in that ledger — no restart of the loop."""
    from bankcore.testing.processes import subprocess_env
    from transfers.engine.legs import leg_decide, leg_prepare

    status = Transfer.Status
    alice, bob = make_account("db2", "100.00"), make_account("db1", "0.00")
    # Due at once: when the loop has aborted it, it has connections to both servers.
    first = _cross_transfer(alice, bob, deadline_in=-1)
    leg_prepare(first)
    loop = subprocess.Popen(
        [sys.executable, "manage.py", "recover_transfers", "--loop", "--interval", "0.2", "--grace", "2"],
        env=subprocess_env(),
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: Transfer.objects.get(pk=first.pk).status == status.ABORTED, timeout=60)
        decided = _cross_transfer(alice, bob, deadline_in=60)
        leg_prepare(decided)  # the debit held in db2
        leg_decide(decided)  # the credit posted in db1: decided, its debit leg left to finish
        undecided = _cross_transfer(alice, bob, deadline_in=1)
        leg_prepare(undecided)  # held in db2, never decided: to be voided past its deadline
        server = ledger_servers()[1]  # db2's, a ledger-only server
        server.kill()
        time.sleep(1.5)
        server.start()
        healed = _wait_for(
            lambda: (
                set(Transfer.objects.filter(pk__in=[decided.pk, undecided.pk]).values_list("status", flat=True))
                == {status.COMPLETED, status.ABORTED}
            ),
            timeout=settings.TRANSACTION_TIMEOUT + settings.RECOVERY_INTERVAL_SECONDS,
        )
        assert Transfer.objects.get(pk=decided.pk).status == status.COMPLETED
    finally:
        loop.terminate()
        out, err = loop.communicate(timeout=30)
    assert loop.returncode == 0, err
    assert "error:" in err  # it did meet the dead server
    print(f"\nthe loop finished both transfers {healed:.1f} s after the server was back")
    report = reconcile()  # this process's own connection to db2 is dead too: it reconnects
    assert report.ok, report.discrepancies
    assert balances(alice, bob) == [Decimal("70.00"), Decimal("30.00")]
