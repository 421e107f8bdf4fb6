"""Many workers at once on real servers: the books still balance, nobody is overdrawn, a hot
account pays out exactly what it holds, one idempotency key makes one transfer."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from decimal import Decimal

import pytest
from django.conf import settings

from accounts.models import Account
from bankcore.actors import Actor, Channel
from bankcore.errors import ApplicationError
from bankcore.testing.books import NOTHING_HELD, balances, held
from bankcore.testing.concurrency import run_threads
from transfers.models import Transfer
from transfers.reconciliation import reconcile
from transfers.recovery import transfers_recover
from transfers.services import transfer_create

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]


@pytest.mark.ledgers3
def test_sixteen_workers_random_transfers_keep_the_books(make_account, ledgers):
    accounts = [make_account(ledgers[i % len(ledgers)], "1000.00") for i in range(20)]
    numbers = [a.number for a in accounts]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + 4.0

    def work(index: int) -> None:
        rng = random.Random(index)
        actor = Actor.system(Channel.API, f"worker-{index}")
        while time.monotonic() < stop_at:
            source, destination = rng.sample(numbers, 2)
            amount = Decimal(rng.randint(1, 40000)) / 100
            try:
                outcome = transfer_create(
                    actor=actor, source_account=source, destination_account=destination, amount=amount
                ).status
            except ApplicationError as error:
                outcome = error.code
            with lock:
                outcomes[outcome] += 1

    errors = run_threads(16, work)
    assert not errors, errors
    # A loaded machine can leave a decided transfer's last leg to recovery (COMMITTED: its finish
    # gave up waiting for a lock), as in the hot-account test below, which recovery must then
    # finish; or refuse one whose prepare gave up (ledger_busy), which must leave nothing behind.
    if outcomes[Transfer.Status.COMMITTED]:
        transfers_recover(grace_seconds=0)
    assert outcomes[Transfer.Status.COMPLETED] > 50, outcomes
    assert set(outcomes) <= {"completed", "committed", "insufficient_funds", "ledger_busy"}, outcomes
    moved = Transfer.objects.filter(source_account__in=numbers, status=Transfer.Status.COMPLETED).count()
    assert moved == outcomes[Transfer.Status.COMPLETED] + outcomes[Transfer.Status.COMMITTED], outcomes
    assert sum(balances(*accounts)) == Decimal("20000.00")
    assert not Transfer.objects.exclude(status__in=[Transfer.Status.COMPLETED, Transfer.Status.ABORTED]).exists()
    for ledger in ledgers:
        assert not Account.objects.using(ledger).filter(allow_overdraft=False, posted__lt=0).exists()
    report = reconcile()
    assert report.ok, report.discrepancies
    print(f"\n{len(ledgers)} ledgers, 16 workers, 4 s: {dict(outcomes)}")


@pytest.mark.parametrize("bound", ["funds", "daily_limit"])
@pytest.mark.parametrize(
    ("source_ledger", "destination_ledger"),
    [("db1", "db2"), ("db2", "db1"), ("db1", "db1"), ("db2", "db2")],
    ids=["from-home", "towards-home", "same-home", "same-other"],
)
def test_hot_account_pays_out_exactly_what_it_may(make_account, settings, bound, source_ledger, destination_ledger):
    """32 concurrent debits of one account that may pay exactly k of them — by its funds, or by
    its daily limit with funds to spare: exactly k succeed, whichever ledger it is in (db1, whose
    debit is prepared with the accept, or db2, whose debit is the decision) and whichever way."""
    k, amount, workers = 10, Decimal("10.00"), 32
    if bound == "daily_limit":
        settings.DAILY_TRANSFER_LIMIT = k * amount
    hot = make_account(source_ledger, str(k * amount * (10 if bound == "daily_limit" else 1)))
    destinations = [make_account(destination_ledger) for _ in range(4)]
    results: list[str] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        actor = Actor.system(Channel.API, f"hot-{index}")
        try:
            outcome = transfer_create(
                actor=actor,
                source_account=hot.number,
                destination_account=destinations[index % 4].number,
                amount=amount,
            ).status
        except ApplicationError as error:
            outcome = error.code
        with lock:
            results.append(outcome)

    errors = run_threads(workers, work)
    assert not errors, errors
    counts = Counter(results)
    # A transfer that won its decision but whose home leg's finish gave up waiting for the hot
    # row's lock (LockConflictGaveUp, on a loaded machine: seen once in CI) is answered COMMITTED,
    # decided and left to recovery to finish. It counts among the k; recovery then completes it.
    decided = counts.pop(Transfer.Status.COMMITTED, 0)
    if decided:
        transfers_recover(grace_seconds=0)
    refusal = "insufficient_funds" if bound == "funds" else "daily_limit_exceeded"
    # (a Counter: equal to one that lacks "completed" when every payment was left to recovery)
    assert counts == Counter({"completed": k - decided, refusal: workers - k}), (counts, decided)
    completed = Transfer.objects.filter(source_account=hot.number, status=Transfer.Status.COMPLETED)
    assert completed.count() == k
    assert balances(hot) == [Decimal(hot.posted) - k * amount]
    assert sum(balances(*destinations)) == k * amount
    assert held(hot, *destinations) == [NOTHING_HELD] * 5


def test_one_idempotency_key_raced_by_eight_workers_makes_one_transfer(make_account):
    alice, bob = make_account("db1", "100.00"), make_account("db2")
    actor = Actor.system(Channel.API, "partner-x")
    ids: list[str] = []
    replayed: list[bool] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        transfer = transfer_create(
            actor=actor,
            source_account=alice.number,
            destination_account=bob.number,
            amount="25.00",
            idempotency_key="race-1",
        )
        with lock:
            ids.append(str(transfer.id))
            replayed.append(transfer.replayed)

    errors = run_threads(8, work)
    assert not errors, errors
    assert len(set(ids)) == 1 and replayed.count(False) == 1
    assert balances(alice, bob) == [Decimal("75.00"), Decimal("25.00")]
    assert Transfer.objects.filter(kind=Transfer.Kind.TRANSFER).count() == 1


def test_reversal_raced_by_eight_workers_happens_once(actor, make_account):
    from transfers.errors import TransferAlreadyReversed
    from transfers.services import transfer_reverse

    alice, bob = make_account("db1", "100.00"), make_account("db2")
    original = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="60.00")
    outcomes: list[str] = []

    def work(index: int) -> None:
        try:
            outcomes.append(transfer_reverse(actor=actor, transfer_id=original.id).status)
        except TransferAlreadyReversed as error:
            outcomes.append(error.code)

    assert not run_threads(8, work)
    assert Counter(outcomes) == {"completed": 1, "transfer_already_reversed": 7}
    assert balances(alice, bob) == [Decimal("100.00"), Decimal("0.00")]
    assert settings.LEDGERS  # the books check runs after the test
