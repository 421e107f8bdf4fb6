"""A batch of transfers as a client submits it: ``TransferBatch``, the batch's own idempotency
record and the order of its items, for the bulk API (``transfers.api_batches``) and the back
office's upload. Its items are made by the batched engine (``transfers.engine.batch``), each a
transfer of its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal

from django.db import IntegrityError, transaction

from bankcore.actors import Actor
from bankcore.errors import ApplicationError
from bankcore.idempotency import IdempotencyKeyReused, idempotency_key_clean
from transfers.engine.batch import BATCH_MAX_ITEMS, BatchTooLarge, transfers_create_batch
from transfers.engine.batch_items import BatchItem, BatchOutcome
from transfers.models import TransferBatch

__all__ = ["BATCH_MAX_ITEMS", "BatchItem", "BatchOutcome", "BatchTooLarge", "transfer_batch_submit"]


def _batch_hash(items: Sequence[BatchItem]) -> str:
    canonical = json.dumps(
        [
            [
                i.source_account,
                i.destination_account,
                str(i.amount),
                i.currency,
                i.reference,
                i.idempotency_key,
                i.linked,
            ]
            for i in items
        ]
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _totals(items: Sequence[BatchItem]) -> dict[str, str]:
    totals: dict[str, Decimal] = {}
    for item in items:
        try:
            amount = Decimal(str(item.amount))
        except ArithmeticError:
            continue  # refused as that item's own invalid_amount
        if amount.is_finite():
            totals[item.currency or ""] = totals.get(item.currency or "", Decimal("0")) + amount
    return {currency: str(total) for currency, total in totals.items()}


def transfer_batch_submit(
    *,
    actor: Actor,
    items: Sequence[BatchItem],
    idempotency_key: str | None,
    refused: Mapping[int, ApplicationError] | None = None,
) -> tuple[TransferBatch, list[BatchOutcome]]:
    """Record the batch under the client's ``idempotency_key``, then make its items
    (``transfers_create_batch``). The same key with the same items answers what the first
    submission did (``batch.replayed``): every item is submitted again under its own key, which
    replays what was recorded, and makes what an outage left unmade. The same key with other items
    raises ``IdempotencyKeyReused``. ``refused``: as ``transfers_create_batch``'s."""
    if len(items) > BATCH_MAX_ITEMS:
        raise BatchTooLarge(f"A batch has at most {BATCH_MAX_ITEMS} items; this one has {len(items)}.")
    key = idempotency_key_clean(idempotency_key)
    request_hash = _batch_hash(items)
    batch = TransferBatch(
        client_id=actor.client_id,
        idempotency_key=key,
        request_hash=request_hash,
        channel=actor.channel,
        created_by_id=actor.user_id,
        item_count=len(items),
        totals=_totals(items),
    )
    try:
        with transaction.atomic(using="default"):
            batch.save(using="default", force_insert=True)
    except IntegrityError:
        existing = TransferBatch.objects.filter(client_id=actor.client_id, idempotency_key=key).first()
        if existing is None:
            raise
        if existing.request_hash != request_hash:
            raise IdempotencyKeyReused(
                "This idempotency key was already used for a different batch.", extra={"batch_id": str(existing.id)}
            ) from None
        batch = existing
        batch.replayed = True
    return batch, transfers_create_batch(actor=actor, items=items, batch=batch, refused=refused)
