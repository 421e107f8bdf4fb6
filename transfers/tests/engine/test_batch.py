"""The batched engine (``transfers.engine.batch``), on real ledgers: each item keeps every guarantee
of a transfer made alone, refusals are per item, a linked chain happens wholly or not at all, and a
batch killed between any two of its steps is settled by recovery."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from accounts.models import Account
from accounts.services import account_freeze
from bankcore.actors import Actor, Channel
from bankcore.errors import ApplicationError
from bankcore.testing.books import NOTHING_HELD, balances, held, world_snapshot
from bankcore.testing.crashes import BATCH_FAULTS, CHAIN_FAULTS
from transfers.models import Transfer
from transfers.recovery import transfers_recover
from transfers.services import BatchItem, transfers_create_batch

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

Status = Transfer.Status


def item(source, destination, amount: str, **fields) -> BatchItem:
    return BatchItem(source_account=source.number, destination_account=destination.number, amount=amount, **fields)


def codes(outcomes) -> list[str | None]:
    return [outcome.error.code if outcome.error else None for outcome in outcomes]


def test_a_batch_across_ledgers_moves_every_item(actor, make_account):
    a1, b1 = make_account("db1", "500.00"), make_account("db1", "500.00")
    a2, b2 = make_account("db2", "500.00"), make_account("db2", "500.00")
    items = [
        item(a1, a2, "10.00", idempotency_key="k1"),
        item(a2, b1, "20.00", idempotency_key="k2"),
        item(b1, a1, "5.00", idempotency_key="k3"),
        item(b2, b1, "1.50", idempotency_key="k4"),
    ]
    outcomes = transfers_create_batch(actor=actor, items=items)
    assert codes(outcomes) == [None] * 4
    assert [o.transfer and o.transfer.status for o in outcomes] == [Status.COMPLETED] * 4
    assert balances(a1, b1, a2, b2) == [Decimal("495.00"), Decimal("516.50"), Decimal("490.00"), Decimal("498.50")]
    assert held(a1, b1, a2, b2) == [NOTHING_HELD] * 4


def test_refusals_are_per_item_and_move_nothing_for_them(actor, make_account):
    a1, a2 = make_account("db1", "100.00"), make_account("db2", "100.00")
    frozen = make_account("db2", "0.00")
    account_freeze(actor=actor, number=frozen.number, reason="test")
    items = [
        item(a1, a2, "30.00", idempotency_key="ok"),
        item(a1, a2, "80.00", idempotency_key="funds"),  # 70.00 left after the first
        item(a1, frozen, "1.00", idempotency_key="frozen"),
        BatchItem(source_account=a1.number, destination_account=a1.number, amount="1.00", idempotency_key="same"),
        BatchItem(source_account=a1.number, destination_account=a2.number, amount="1.001"),
        item(a2, a1, "10.00", idempotency_key="back"),
    ]
    outcomes = transfers_create_batch(actor=actor, items=items)
    assert codes(outcomes) == [
        None,
        "insufficient_funds",
        "account_frozen",
        "same_account",
        "invalid_amount",
        None,
    ]
    assert [o.transfer.status if o.transfer else None for o in outcomes] == [
        Status.COMPLETED,
        Status.ABORTED,
        Status.ABORTED,
        None,
        None,
        Status.COMPLETED,
    ]
    assert balances(a1, a2, frozen) == [Decimal("80.00"), Decimal("120.00"), Decimal("0.00")]
    assert held(a1, a2, frozen) == [NOTHING_HELD] * 3


@override_settings(DAILY_TRANSFER_LIMIT=Decimal("100.00"))
def test_the_daily_limit_counts_the_earlier_items_of_the_batch(actor, make_account):
    a1, a2 = make_account("db1", "1000.00"), make_account("db2", "0.00")
    outcomes = transfers_create_batch(
        actor=actor, items=[item(a1, a2, "60.00"), item(a1, a2, "50.00"), item(a1, a2, "40.00")]
    )
    assert codes(outcomes) == [None, "daily_limit_exceeded", None]
    assert balances(a1, a2) == [Decimal("900.00"), Decimal("100.00")]


def test_a_linked_chain_with_one_refusal_moves_nothing_of_the_chain(actor, make_account):
    a1, a2, c1 = make_account("db1", "100.00"), make_account("db2", "100.00"), make_account("db1", "0.00")
    items = [
        item(a1, a2, "10.00", linked=True, idempotency_key="c1"),
        item(a2, c1, "20.00", linked=True, idempotency_key="c2"),
        item(c1, a1, "50.00", idempotency_key="c3"),  # c1 has 0 (+20 only if the chain moved)
        item(a1, a2, "5.00", idempotency_key="alone"),
    ]
    before = balances(a1, a2, c1)
    outcomes = transfers_create_batch(actor=actor, items=items)
    assert codes(outcomes) == ["linked_transfer_failed", "linked_transfer_failed", "insufficient_funds", None]
    assert [o.transfer and o.transfer.status for o in outcomes] == [Status.ABORTED] * 3 + [Status.COMPLETED]
    assert balances(a1, a2, c1) == [before[0] - 5, before[1] + 5, before[2]]
    assert held(a1, a2, c1) == [NOTHING_HELD] * 3


def test_a_linked_chain_that_holds_moves_wholly(actor, make_account):
    a1, a2, c1 = make_account("db1", "100.00"), make_account("db2", "1.00"), make_account("db1", "0.00")
    outcomes = transfers_create_batch(
        actor=actor,
        items=[item(a1, a2, "60.00", linked=True), item(a2, c1, "1.00", linked=True), item(a1, c1, "40.00")],
    )
    assert codes(outcomes) == [None, None, None]
    assert balances(a1, a2, c1) == [Decimal("0.00"), Decimal("60.00"), Decimal("41.00")]


def test_each_item_replays_under_its_own_key(actor, make_account):
    a1, a2 = make_account("db1", "100.00"), make_account("db2", "0.00")
    items = [item(a1, a2, "30.00", idempotency_key="r1"), item(a1, a2, "90.00", idempotency_key="r2")]
    first = transfers_create_batch(actor=actor, items=items)
    again = transfers_create_batch(actor=actor, items=items)
    assert codes(again) == codes(first) == [None, "insufficient_funds"]
    assert [o.replayed for o in again] == [True, True]
    assert [o.transfer and o.transfer.pk for o in again] == [o.transfer and o.transfer.pk for o in first]
    assert balances(a1, a2) == [Decimal("70.00"), Decimal("30.00")]


@pytest.mark.slow
@pytest.mark.ledgers3
def test_batches_and_single_transfers_racing_never_overdraw(make_account, ledgers):
    from transfers.services import transfer_create

    accounts = [make_account(ledgers[i % len(ledgers)], "100.00") for i in range(6)]
    errors: list[BaseException] = []

    def batch_worker(seed: int) -> None:
        try:
            actor = Actor.system(Channel.API, f"batch-{seed}")
            for round_ in range(3):
                items = [
                    item(accounts[(seed + i) % 6], accounts[(seed + i + 1 + round_) % 6], "35.00", linked=(i % 3 == 0))
                    for i in range(12)
                ]
                transfers_create_batch(actor=actor, items=items)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def single_worker(seed: int) -> None:
        try:
            actor = Actor.system(Channel.API, f"single-{seed}")
            for i in range(20):
                try:
                    transfer_create(
                        actor=actor,
                        source_account=accounts[(seed + i) % 6].number,
                        destination_account=accounts[(seed + 2 * i + 1) % 6].number,
                        amount="45.00",
                    )
                except ApplicationError:  # refusals are expected
                    pass
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=batch_worker, args=(s,)) for s in (0, 1)]
    threads += [threading.Thread(target=single_worker, args=(s,)) for s in (2, 3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    fresh = [Account.objects.using(a.ledger).get(pk=a.pk) for a in accounts]
    assert all(a.posted >= 0 for a in fresh)
    assert sum(a.posted for a in fresh) == Decimal("600.00")
    assert held(*accounts) == [NOTHING_HELD] * 6
    # A single transfer whose accept met a lock conflict on the control plane's server may answer
    # ledger_unavailable with its accept left PENDING and nothing held: recovery settles it.
    later = timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT + 5)
    transfers_recover(now=later, grace_seconds=0)
    assert not Transfer.objects.exclude(status__in=[Status.COMPLETED, Status.ABORTED]).exists()
    assert sum(a.posted for a in (Account.objects.using(a.ledger).get(pk=a.pk) for a in accounts)) == Decimal("600.00")
    assert settings.LEDGERS


# --- crashes between the batched steps ---------------------------------------------------------------


def run_batch_until_fault(fault: str, items: list[BatchItem]) -> None:
    """``transfers_create_batch`` in a child process that exits hard at ``fault``."""
    import json
    import subprocess
    import sys

    from bankcore.faults import FAULT_EXIT_CODE
    from bankcore.testing.processes import subprocess_env

    rows = json.dumps(
        [[i.source_account, i.destination_account, str(i.amount), i.idempotency_key, i.linked] for i in items]
    )
    code = (
        "import django, json, sys; django.setup();"
        "from bankcore.actors import Actor, Channel;"
        "from transfers.services import BatchItem, transfers_create_batch;"
        "items = [BatchItem(source_account=s, destination_account=d, amount=a, idempotency_key=k, linked=l) "
        "for s, d, a, k, l in json.loads(sys.argv[1])];"
        "transfers_create_batch(actor=Actor.system(Channel.COMMAND, 'crash'), items=items)"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, rows],
        env=subprocess_env(BANKCORE_FAULT_AT=fault),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=settings.BASE_DIR,
    )
    assert child.returncode == FAULT_EXIT_CODE, child.stderr


@pytest.mark.slow
@pytest.mark.parametrize("fault", BATCH_FAULTS)
def test_a_batch_killed_at_each_step_is_settled_by_recovery(actor, make_account, fault):
    from datetime import timedelta

    from django.utils import timezone

    from transfers.recovery import transfers_recover

    a1, b1 = make_account("db1", "100.00"), make_account("db1", "0.00")
    a2, c2 = make_account("db2", "100.00"), make_account("db2", "0.00")
    account_freeze(actor=actor, number=c2.number, reason="test")
    items = [
        item(a1, a2, "30.00", idempotency_key="x-cross"),
        item(a2, a1, "20.00", idempotency_key="x-back"),
        item(a1, b1, "10.00", idempotency_key="x-local"),
        item(a1, c2, "5.00", idempotency_key="x-frozen"),
        item(a2, a1, "500.00", idempotency_key="x-funds"),
    ]
    run_batch_until_fault(fault, items)
    later = timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT + 5)
    transfers_recover(now=later, grace_seconds=0)
    again = transfers_recover(now=later, grace_seconds=0)
    assert again.total == 0 and not again.errors, "recovery must be idempotent"

    by_key = {t.idempotency_key: t.status for t in Transfer.objects.filter(idempotency_key__startswith="x-")}
    moved = {
        "after_batch_accept": set(),
        "after_batch_prepare": {"x-local"},
        "after_batch_decide": {"x-local", "x-cross", "x-back"},
        "after_batch_finish": {"x-local", "x-cross", "x-back"},
    }[fault]
    assert by_key == {key: Status.COMPLETED if key in moved else Status.ABORTED for key in by_key}
    assert len(by_key) == 5
    expected = {
        "x-cross": (a1, a2, Decimal("30.00")),
        "x-back": (a2, a1, Decimal("20.00")),
        "x-local": (a1, b1, Decimal("10.00")),
    }
    start = {a1.number: Decimal("100.00"), b1.number: Decimal("0.00"), a2.number: Decimal("100.00")}
    start[c2.number] = Decimal("0.00")
    for key in moved:
        source, destination, amount = expected[key]
        start[source.number] -= amount
        start[destination.number] += amount
    assert balances(a1, b1, a2, c2) == [start[a.number] for a in (a1, b1, a2, c2)]
    assert held(a1, b1, a2, c2) == [NOTHING_HELD] * 4

    # The batch sent again under its keys answers what was recorded (an outage is retried: the items
    # recovery voided past their deadline are made now), and moves nothing twice.
    outcomes = transfers_create_batch(actor=Actor.system(Channel.COMMAND, "crash"), items=items)
    assert codes(outcomes)[3:] == ["account_frozen", "insufficient_funds"] or fault in (
        "after_batch_accept",
        "after_batch_prepare",
    )
    assert [o.transfer and o.transfer.status for o in outcomes[:3]] == [Status.COMPLETED] * 3
    assert held(a1, b1, a2, c2) == [NOTHING_HELD] * 4


def test_a_chain_refused_at_its_destination_moves_nothing(actor, make_account):
    a1, b1 = make_account("db1", "100.00"), make_account("db1", "0.00")
    a2, c2 = make_account("db2", "100.00"), make_account("db2", "0.00")
    account_freeze(actor=actor, number=c2.number, reason="test")
    before = world_snapshot(a1, b1, a2, c2)
    outcomes = transfers_create_batch(
        actor=actor,
        items=[item(a1, a2, "30.00", linked=True), item(a1, b1, "10.00", linked=True), item(a2, c2, "5.00")],
    )
    assert codes(outcomes) == ["linked_transfer_failed", "linked_transfer_failed", "account_frozen"]
    after = world_snapshot(a1, b1, a2, c2)
    assert after["accounts"] == before["accounts"] and after["entries"] == before["entries"]
    assert after["legs"] == before["legs"]


@pytest.mark.slow
@pytest.mark.parametrize("fault", CHAIN_FAULTS)
def test_a_chain_killed_at_each_step_happens_wholly_or_not_at_all(actor, make_account, fault):
    from datetime import timedelta

    from django.utils import timezone

    from transfers.recovery import transfers_recover

    a1, b1 = make_account("db1", "100.00"), make_account("db1", "0.00")
    a2 = make_account("db2", "100.00")
    items = [
        item(a1, a2, "30.00", idempotency_key="y-1", linked=True),
        item(a2, b1, "20.00", idempotency_key="y-2", linked=True),
        item(a1, b1, "10.00", idempotency_key="y-3"),  # inside db1, the chain's last
        item(a2, a1, "5.00", idempotency_key="y-alone"),
    ]
    run_batch_until_fault(fault, items)
    later = timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT + 5)
    transfers_recover(now=later, grace_seconds=0)
    again = transfers_recover(now=later, grace_seconds=0)
    assert again.total == 0 and not again.errors, "recovery must be idempotent"

    by_key = {t.idempotency_key: t.status for t in Transfer.objects.filter(idempotency_key__startswith="y-")}
    chain_moved = fault in ("after_batch_link", "after_batch_finish")
    alone_moved = fault not in ("after_batch_accept", "after_batch_prepare")
    assert {by_key["y-1"], by_key["y-2"], by_key["y-3"]} == {Status.COMPLETED if chain_moved else Status.ABORTED}
    assert by_key["y-alone"] == (Status.COMPLETED if alone_moved else Status.ABORTED)
    alone = (Decimal("5.00"), Decimal("-5.00"), 0) if alone_moved else (0, 0, 0)
    # a1, a2, b1: the chain moves a1 -30 -10, a2 +30 -20, b1 +20 +10
    expected_chain = (Decimal("-40.00"), Decimal("10.00"), Decimal("30.00")) if chain_moved else (0, 0, 0)
    assert balances(a1, a2, b1) == [
        Decimal("100.00") + expected_chain[0] + alone[0],
        Decimal("100.00") + expected_chain[1] + alone[1],
        Decimal("0.00") + expected_chain[2],
    ]
    assert held(a1, a2, b1) == [NOTHING_HELD] * 3
