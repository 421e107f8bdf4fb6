"""Recovery settles many stuck transfers in batches, and two recovery workers at once settle each
exactly once."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connections
from django.utils import timezone

from accounts.models import Account, Entry
from audit.models import AuditEvent
from bankcore.testing.books import NOTHING_HELD, held
from transfers.engine.legs import leg_decide, leg_prepare
from transfers.models import Transfer, TransferLeg
from transfers.recovery import RecoveryReport, transfers_recover

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]

AMOUNT = Decimal("1.00")


def _stuck(source, destination, kind: str) -> Transfer:
    """A cross-ledger transfer left as a crashed coordinator leaves it: its debit leg prepared,
    and then ``decided`` (credit committed), ``hint`` (decided, COMMITTED in the control plane) or
    ``undecided`` (past its deadline)."""
    now = timezone.now()
    transfer = Transfer.objects.create(
        source_account=source.number,
        source_ledger=source.ledger,
        destination_account=destination.number,
        destination_ledger=destination.ledger,
        amount=AMOUNT,
        currency="CNY",
        client_id="t",
        request_hash="x",
        business_date=timezone.localdate(),
        deadline=now + timedelta(seconds=30),
        channel="system",
    )
    leg_prepare(transfer)
    if kind in ("decided", "hint"):
        leg_decide(transfer)
    # Left a minute ago, its deadline passed since.
    fields: dict[str, object] = {"created_at": now - timedelta(seconds=60), "deadline": now - timedelta(seconds=30)}
    if kind == "hint":
        fields |= {"status": Transfer.Status.COMMITTED, "committed_at": now - timedelta(seconds=60)}
    Transfer.objects.filter(pk=transfer.pk).update(**fields)
    return transfer


def test_two_recovery_workers_at_once_settle_each_stuck_transfer_exactly_once(make_account):
    """Given 60 stuck transfers between six accounts (a third decided, a third with the committed
    hint, a third undecided past their deadline), when two recovery passes run at once in small
    batches, then each transfer ends once — one outcome, one audit event, one entry per leg — the
    money moved is exactly the decided transfers', nothing stays held, and the two reports add up
    to one settlement each."""
    sources = [make_account("db1", "100.00") for _ in range(3)]
    destinations = [make_account("db2", "0.00") for _ in range(3)]
    kinds = ["decided", "hint", "undecided"] * 20
    transfers = [_stuck(sources[(i // 3) % 3], destinations[(i // 3) % 3], kind) for i, kind in enumerate(kinds)]
    barrier = threading.Barrier(2)
    reports: list[RecoveryReport] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            reports.append(transfers_recover(grace_seconds=0, batch_size=7))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors and len(reports) == 2
    assert [error for report in reports for error in report.errors] == []
    total = sum((report.actions for report in reports), Counter[str]())
    assert total == {"leg_committed": 40, "transfer_completed": 40, "transfer_aborted": 20}
    expected = {"decided": Transfer.Status.COMPLETED, "hint": Transfer.Status.COMPLETED}
    for transfer, kind in zip(transfers, kinds, strict=True):
        assert Transfer.objects.get(pk=transfer.pk).status == expected.get(kind, Transfer.Status.ABORTED)
    events = Counter(
        AuditEvent.objects.filter(
            action__in=["transfer.completed", "transfer.aborted"], object_id__in=[str(t.id) for t in transfers]
        ).values_list("object_id", flat=True)
    )
    assert events == {str(transfer.id): 1 for transfer in transfers}
    for ledger in ("db1", "db2"):
        entries = Entry.objects.using(ledger).filter(transfer_id__in=[t.id for t in transfers])
        assert entries.count() == 40
        assert not TransferLeg.objects.using(ledger).filter(state=TransferLeg.State.PREPARED).exists()
    paid = Counter((i // 3) % 3 for i, kind in enumerate(kinds) if kind != "undecided")
    for n in range(3):
        source = Account.objects.using("db1").get(pk=sources[n].pk)
        destination = Account.objects.using("db2").get(pk=destinations[n].pk)
        assert (source.posted, destination.posted) == (Decimal("100.00") - paid[n], Decimal(paid[n]))
    assert held(*sources, *destinations) == [NOTHING_HELD] * 6  # and the books balance (the autouse fixture)
