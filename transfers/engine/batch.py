"""The batched engine: N transfers, any mix of ledgers and directions, through the protocol of
a single transfer in a constant number of commits per ledger involved, each keeping every guarantee
of a transfer made alone (its own idempotency key and replay, its refusals and their codes, limits,
recovery, reconciliation). One item's refusal does not fail the others, unless the caller links
them: an item marked ``linked`` forms one chain with the item after it (TigerBeetle's linked
events), and a chain happens wholly or not at all.

The steps (see the outline below) are in ``transfers.engine.batch_accept`` (1),
``transfers.engine.batch_ledgers`` (2, 3 and 5) and ``transfers.engine.batch_chains`` (4); the
last, complete, is here, with the order that runs them. ``transfers.services`` exports
``transfers_create_batch``, ``BatchItem`` and ``BatchOutcome`` (``transfers.engine.batch_items``);
``transfers.batch`` records a batch itself (``TransferBatch``) for the bulk API.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

from django.db import OperationalError
from django.utils import timezone

from bankcore.actors import Actor
from bankcore.db import atomic_with_retry
from bankcore.errors import ApplicationError
from bankcore.faults import fault_point
from bankcore.metrics import record_transfer
from transfers import batch_sql
from transfers.engine.batch_accept import items_accept
from transfers.engine.batch_chains import chains, chains_decide, chains_fail
from transfers.engine.batch_items import BatchItem, BatchOutcome, BatchWork, work_grouped
from transfers.engine.batch_ledgers import decide_in, finish_in, prepare_in
from transfers.engine.outcome import transfer_event, transfer_refusal_error
from transfers.errors import LedgerUnavailable
from transfers.models import Transfer, TransferBatch, TransferLeg

logger = logging.getLogger(__name__)

Leg = TransferLeg.Leg
Status = Transfer.Status

BATCH_MAX_ITEMS = 1000


class BatchTooLarge(ApplicationError):
    code = "batch_too_large"
    title = "Too many items in one batch"
    http_status = 400


def transfers_create_batch(
    *,
    actor: Actor,
    items: Sequence[BatchItem],
    kind: str = Transfer.Kind.TRANSFER,
    batch: TransferBatch | None = None,
    refused: Mapping[int, ApplicationError] | None = None,
) -> list[BatchOutcome]:
    """Make every item of ``items``; one outcome per item, in their order. Never raises for one
    item's refusal: it is that item's ``error``. ``batch``: the record the transfers belong to.
    ``refused``: items (by position) the caller refuses before they are accepted (an account the
    client may not debit): they are answered with that error, and fail the chain they are in."""
    if kind != Transfer.Kind.TRANSFER:
        raise ValueError("batches carry transfers between customer accounts only")
    if len(items) > BATCH_MAX_ITEMS:
        raise BatchTooLarge(f"A batch has at most {BATCH_MAX_ITEMS} items; this one has {len(items)}.")
    chain_of: dict[int, int] = {}
    for number, chain in enumerate(chains(items)):
        if len(chain) > 1:
            chain_of.update(dict.fromkeys(chain, number))
    outcomes = _batched(actor, items, chain_of, refused or {}, batch)
    return [outcomes[position] for position in range(len(items))]


# --- the batched engine ---------------------------------------------------------------------------
#
# The items go through the protocol of ``transfers.services`` together, in a constant number of
# commits per ledger whatever their number (docs/architecture.md, "Batches"):
#
#   1. accept   — every item PENDING, in one commit of the control plane (one multi-row INSERT);
#   2. prepare  — per source ledger, one commit: its accounts locked in canonical order, each item
#                 checked in order (funds and daily limit count the batch's earlier items), the
#                 debit legs PREPARED and held; an unlinked item inside that ledger is made there
#                 outright;
#   3. decide   — per destination ledger, one commit: each credit checked; an unlinked item's posted,
#                 its leg COMMITTED (its decision); a linked item's held in pending credits, its leg
#                 PREPARED;
#   4. link     — if the batch has chains: one commit of the control plane deciding every chain whose
#                 items all prepared both legs: its transfers PENDING → COMMITTED together;
#   5. finish   — per ledger, one commit: decided legs COMMITTED and posted, the others' VOIDED and
#                 released (debit legs in the source ledgers, a chain's credit legs in theirs);
#   6. complete — one commit of the control plane: COMPLETED, or ABORTED with each refusal's code.
#
# Each item is at every moment in a state of a single transfer's protocol that recovery finishes or
# voids on its own: an unlinked item is decided once its credit leg is COMMITTED, aborted by a
# tombstone on it otherwise; a linked item has both legs prepared, and its decision is its
# transfer's COMMITTED status (the form recovery settles as "decided in the control plane": past
# its deadline a PENDING one is aborted there, and a COMMITTED one has both legs committed).
# Refusals found before the accept are answered and not recorded, as ``transfer_create``'s are.


def _batched(
    actor: Actor,
    items: Sequence[BatchItem],
    chain_of: dict[int, int],
    refused: Mapping[int, ApplicationError],
    batch: TransferBatch | None,
) -> dict[int, BatchOutcome]:
    outcomes: dict[int, BatchOutcome] = {}
    started = time.monotonic()
    work = items_accept(actor, items, chain_of, refused, batch, outcomes)
    if not work:
        return outcomes
    fault_point("after_batch_accept")
    for ledger, group in work_grouped(work, lambda w: w.transfer.source_ledger):
        prepare_in(ledger, group)
    chains_fail(work)
    fault_point("after_batch_prepare")
    deciding = [w for w in work if w.held and w.error is None and not w.unknown]
    for ledger, group in work_grouped(deciding, lambda w: w.transfer.destination_ledger):
        decide_in(ledger, group)
    chains_fail(work)
    fault_point("after_batch_decide")
    linked = [w for w in work if w.chain is not None and w.credit_held and w.error is None and not w.unknown]
    if linked:
        chains_decide(linked)
        chains_fail(work)
        fault_point("after_batch_link")
    debiting = [w for w in work if w.held and not w.unknown]
    for ledger, group in work_grouped(debiting, lambda w: w.transfer.source_ledger):
        finish_in(ledger, group, Leg.DEBIT)
    crediting = [w for w in work if w.credit_held and not w.unknown]
    for ledger, group in work_grouped(crediting, lambda w: w.transfer.destination_ledger):
        finish_in(ledger, group, Leg.CREDIT)
    fault_point("after_batch_finish")
    _complete_all(work)
    for w in work:
        transfer = w.transfer
        transfer.replayed = False
        if transfer.is_final:
            record_transfer(
                kind=transfer.kind,
                outcome=transfer.failure_code or transfer.status,
                cross_ledger=transfer.is_cross_ledger,
                seconds=time.monotonic() - started,
            )
        error = transfer_refusal_error(transfer)
        if error is None and w.unknown and transfer.status == Status.PENDING:
            error = LedgerUnavailable(
                "A database did not answer; the transfer will be completed or voided by recovery.",
                extra={"transfer_id": str(transfer.id)},
            )
        outcomes[w.position] = BatchOutcome(transfer, error)
    return outcomes


def _complete_all(work: list[BatchWork]) -> None:
    """Step 6: every item made COMPLETED and every refusal ABORTED with its code, with their audit
    events, in one commit of the control plane; one recovery finished first is left as it is."""
    final = [w for w in work if not w.unknown and (w.decided or w.error is not None)]
    if not final:
        return

    def complete() -> tuple[set[uuid.UUID], datetime]:
        now = timezone.now()
        open_ids = batch_sql.transfers_lock_open([w.transfer.id for w in final])
        done = [w for w in final if w.transfer.id in open_ids and w.error is None]
        if done:
            batch_sql.transfers_mark_completed_many([w.transfer.id for w in done], now=now)
        for w in final:
            if w.transfer.id not in open_ids:
                continue
            if w.error is None:
                transfer_event(w.transfer, w.actor, "transfer.completed")
            else:
                batch_sql.transfer_mark_aborted(
                    w.transfer.id, failure_code=w.error.code, failure_detail=w.error.detail[:500], now=now
                )
                transfer_event(w.transfer, w.actor, "transfer.aborted", failure_code=w.error.code)
        return open_ids, now

    try:
        open_ids, now = atomic_with_retry("default", complete)
    except OperationalError:
        logger.warning("batch: the control plane failed at complete; recovery finishes the batch")
        for w in final:
            w.unknown = True
        return
    for w in final:
        t = w.transfer
        if t.id not in open_ids:
            t.refresh_from_db()
        elif w.error is None:
            t.status, t.finished_at, t.committed_at = Status.COMPLETED, now, t.committed_at or now
        else:
            t.status, t.finished_at = Status.ABORTED, now
            t.failure_code, t.failure_detail = w.error.code, w.error.detail[:500]
