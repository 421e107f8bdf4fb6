"""Transfers in batches: N transfers, any mix of ledgers and directions, each with every guarantee
of one made alone (its own idempotency key and replay, its refusals and their codes, limits,
recovery, reconciliation). One item's refusal does not fail the others, unless the caller links
them: an item marked ``linked`` forms one chain with the item after it (TigerBeetle's linked
events), and a chain happens wholly or not at all.

``transfers_create_batch`` is the engine; ``transfer_batch_submit`` records the batch itself
(``TransferBatch``: its idempotency key, request hash, items in order) for the bulk API.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from bankcore.actors import Actor
from bankcore.errors import ApplicationError
from bankcore.idempotency import IdempotencyKeyReused, idempotency_key_clean
from transfers.errors import NOT_AN_OUTCOME, LinkedTransferFailed
from transfers.models import Transfer, TransferBatch
from transfers.services import (
    transfer_create,
    transfer_held_execute,
    transfer_hold,
    transfer_hold_abort,
    transfer_hold_release,
    transfer_refusal_error,
)

BATCH_MAX_ITEMS = 1000


@dataclass(frozen=True)
class BatchItem:
    source_account: str
    destination_account: str
    amount: Decimal | str
    currency: str | None = None
    reference: str = ""
    idempotency_key: str | None = None  # per item, as transfer_create's
    # Item i linked: i and i + 1 form one chain, which happens wholly or not at all.
    linked: bool = False
    # Who asked for this item, when not the batch's actor: a single transfer coalesced into a batch
    # (``transfers.group_commit``) keeps its own request id and address in the audit trail.
    actor: Actor | None = None


@dataclass
class BatchOutcome:
    # COMPLETED; ABORTED for a recorded refusal; PENDING/COMMITTED when a ledger failed and
    # recovery finishes it; None when the item was refused before it was accepted.
    transfer: Transfer | None
    error: ApplicationError | None  # the refusal, with its stable code; None when it moved
    replayed: bool = False


class BatchTooLarge(ApplicationError):
    code = "batch_too_large"
    title = "Too many items in one batch"
    http_status = 400


def chains(items: Sequence[BatchItem]) -> Iterator[list[int]]:
    """The positions of the items, grouped in chains (an unlinked item is a chain of one). A last
    item marked ``linked`` closes its chain."""
    chain: list[int] = []
    for position, item in enumerate(items):
        chain.append(position)
        if not item.linked:
            yield chain
            chain = []
    if chain:
        yield chain


def transfers_create_batch(
    *,
    actor: Actor,
    items: Sequence[BatchItem],
    kind: str = Transfer.Kind.TRANSFER,
    batch: TransferBatch | None = None,
) -> list[BatchOutcome]:
    """Make every item of ``items``; one outcome per item, in their order. Never raises for one
    item's refusal: it is that item's ``error``. ``batch``: the record the transfers belong to."""
    if kind != Transfer.Kind.TRANSFER:
        raise ValueError("batches carry transfers between customer accounts only")
    if len(items) > BATCH_MAX_ITEMS:
        raise BatchTooLarge(f"A batch has at most {BATCH_MAX_ITEMS} items; this one has {len(items)}.")
    outcomes: list[BatchOutcome] = []
    for chain in chains(items):
        if len(chain) == 1:
            outcomes.append(_one(items[chain[0]].actor or actor, items[chain[0]]))
        else:
            outcomes.extend(_chain(actor, [items[position] for position in chain]))
    if batch is not None:
        _attach(batch, outcomes)
    return outcomes


def _one(actor: Actor, item: BatchItem) -> BatchOutcome:
    try:
        transfer = transfer_create(
            actor=actor,
            source_account=item.source_account,
            destination_account=item.destination_account,
            amount=item.amount,
            currency=item.currency,
            reference=item.reference,
            idempotency_key=item.idempotency_key,
        )
    except ApplicationError as error:
        return BatchOutcome(getattr(error, "transfer", None), error, bool(getattr(error, "replayed", False)))
    return BatchOutcome(transfer, None, transfer.replayed)


def _chain(actor: Actor, items: list[BatchItem]) -> list[BatchOutcome]:
    """A linked chain: every item's amount held first (its source checked and its amount kept
    aside), then, only if every hold was taken, every item made; otherwise every hold released."""
    until = timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT)
    outcomes: list[BatchOutcome] = []
    for item in items:
        try:
            transfer = transfer_hold(
                actor=item.actor or actor,
                kind=Transfer.Kind.TRANSFER,
                source_account=item.source_account,
                destination_account=item.destination_account,
                amount=item.amount,
                currency=item.currency,
                reference=item.reference,
                idempotency_key=item.idempotency_key,
                until=until,
            )
        except ApplicationError as error:
            outcomes.append(
                BatchOutcome(getattr(error, "transfer", None), error, bool(getattr(error, "replayed", False)))
            )
        else:
            outcomes.append(BatchOutcome(transfer, None, transfer.replayed))
    failed = next((outcome.error for outcome in outcomes if outcome.error is not None), None)
    if failed is not None:
        return [_chain_fail(actor, outcome, failed) for outcome in outcomes]
    for outcome in outcomes:
        assert outcome.transfer is not None
        try:
            outcome.transfer = transfer_held_execute(actor=actor, transfer=outcome.transfer)
        except ApplicationError as error:
            outcome.error = error
    return outcomes


def _chain_fail(actor: Actor, outcome: BatchOutcome, cause: ApplicationError) -> BatchOutcome:
    """An item of a chain that was refused elsewhere: its hold aborted and released. An outage is
    not an outcome, for the chain as for its item: the items then carry the outage's code, so that
    the chain retried under its keys is made anew as a whole."""
    transfer = outcome.transfer
    if outcome.error is not None or transfer is None:
        return outcome
    error: ApplicationError = (
        type(cause)(cause.detail)
        if cause.code in NOT_AN_OUTCOME
        else LinkedTransferFailed("Another transfer of its linked chain was refused; nothing of the chain was made.")
    )
    if transfer.status == Transfer.Status.PENDING and transfer_hold_abort(actor=actor, transfer=transfer, error=error):
        transfer_hold_release(transfer=transfer)
    transfer.refresh_from_db()
    return BatchOutcome(transfer, transfer_refusal_error(transfer) or error, outcome.replayed)


def _attach(batch: TransferBatch, outcomes: list[BatchOutcome]) -> None:
    for position, outcome in enumerate(outcomes):
        if outcome.transfer is not None and outcome.transfer.batch_id is None:
            Transfer.objects.filter(pk=outcome.transfer.pk, batch__isnull=True).update(
                batch=batch, batch_position=position
            )
            outcome.transfer.batch_id, outcome.transfer.batch_position = batch.pk, position


# --- the batch record ---------------------------------------------------------------------------


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
    *, actor: Actor, items: Sequence[BatchItem], idempotency_key: str | None
) -> tuple[TransferBatch, list[BatchOutcome]]:
    """Record the batch under the client's ``idempotency_key``, then make its items
    (``transfers_create_batch``). The same key with the same items answers what the first
    submission did (``batch.replayed``): every item is submitted again under its own key, which
    replays what was recorded, and makes what an outage left unmade. The same key with other items
    raises ``IdempotencyKeyReused``."""
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
    return batch, transfers_create_batch(actor=actor, items=items, batch=batch)
