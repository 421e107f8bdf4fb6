"""A ledger's server is killed (SIGKILL) in the middle of a run of transfers and restarted.
After recovery every invariant holds and no transfer is left unfinished."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from django.utils import timezone

from bankcore.actors import Actor, Channel
from bankcore.errors import ApplicationError
from bankcore.testing.plugin import ledger_servers
from conftest import balances
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
                # Each iteration is a request: Django drops a failed, dead connection at a
                # request's boundaries (the engine's own transactions check theirs themselves).
                close_old_connections()
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
    report = reconcile(now=later)
    assert report.ok, report.discrepancies
    assert outcomes["completed"] > 0
    print(f"\nkilled server {victim + 1}: {dict(outcomes)}")
