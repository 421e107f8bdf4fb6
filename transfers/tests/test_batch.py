"""The batch record (``transfers.batch``): idempotent under its own key, and a batch above the
limit refused whole with nothing moved."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bankcore.actors import Actor, Channel
from bankcore.testing.books import balances, world_snapshot
from transfers.batch import BatchTooLarge, transfer_batch_submit
from transfers.errors import IdempotencyKeyReused
from transfers.models import TransferBatch
from transfers.services import BatchItem

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def item(source, destination, amount: str, **fields) -> BatchItem:
    return BatchItem(source_account=source.number, destination_account=destination.number, amount=amount, **fields)


def test_the_batch_record_is_idempotent(make_account):
    actor = Actor.system(Channel.API, "batcher")
    a1, a2 = make_account("db1", "100.00"), make_account("db2", "0.00")
    items = [item(a1, a2, "30.00", idempotency_key="i1"), item(a1, a2, "20.00", idempotency_key="i2")]
    batch, outcomes = transfer_batch_submit(actor=actor, items=items, idempotency_key="batch-1")
    assert not batch.replayed and batch.item_count == 2 and batch.totals == {"": "50.00"}
    assert list(batch.transfers.order_by("batch_position").values_list("pk", flat=True)) == [
        o.transfer and o.transfer.pk for o in outcomes
    ]
    again, replayed = transfer_batch_submit(actor=actor, items=items, idempotency_key="batch-1")
    assert again.pk == batch.pk and again.replayed and all(o.replayed for o in replayed)
    snapshot = world_snapshot(a1, a2)
    with pytest.raises(IdempotencyKeyReused):
        transfer_batch_submit(actor=actor, items=items[:1], idempotency_key="batch-1")
    assert world_snapshot(a1, a2) == snapshot
    assert TransferBatch.objects.count() == 1
    assert balances(a1, a2) == [Decimal("50.00"), Decimal("50.00")]


def test_more_than_a_thousand_items_are_refused_and_nothing_moves(actor, make_account):
    a1, a2 = make_account("db1", "100.00"), make_account("db2", "0.00")
    snapshot = world_snapshot(a1, a2)
    with pytest.raises(BatchTooLarge):
        transfer_batch_submit(actor=actor, items=[item(a1, a2, "0.01")] * 1001, idempotency_key="big")
    assert world_snapshot(a1, a2) == snapshot
    assert TransferBatch.objects.count() == 0
