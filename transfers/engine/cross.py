"""A transfer across two ledgers in five durable commits (docs/architecture.md, "The transfer
protocol"):

1. accept   — the transfer PENDING in the control plane (``transfers.engine.accept``);
2. prepare  — the debit leg PREPARED in the source ledger, its amount held;
3. decide   — the credit leg COMMITTED in the destination ledger: the point of no return;
4. finish   — the debit leg PREPARED → COMMITTED, the held amount posted;
5. complete — the transfer COMPLETED.

The refusals found in the source ledger (funds, limit, frozen source) never touch the
destination. A failure after the decision leaves the finishing to recovery.
"""

from __future__ import annotations

import logging

from django.db import OperationalError

from bankcore.actors import Actor
from bankcore.db import CommitOutcomeUnknown, LockConflictGaveUp
from bankcore.faults import fault_point
from transfers.engine.legs import leg_commit, leg_decide, leg_prepare
from transfers.engine.outcome import transfer_abort_decide, transfer_complete, transfer_mark_committed
from transfers.errors import LedgerUnavailable, TransferRefused
from transfers.models import Transfer, TransferLeg

logger = logging.getLogger(__name__)

Leg = TransferLeg.Leg


def cross_ledger_execute(transfer: Transfer, actor: Actor) -> None:
    """Steps 2 to 5 of an accepted transfer across ledgers. ``CommitOutcomeUnknown`` from the
    decision propagates: the caller answers "ledger unavailable" and recovery reads the credit leg
    to settle it."""
    if not debit_prepare(transfer, actor):
        return
    fault_point("after_prepare_debit")
    try:
        leg_decide(transfer)
    except TransferRefused as refused:
        transfer_abort_decide(transfer, actor, refused.error, legs_to_void=[Leg.DEBIT])
        return
    fault_point("after_decide_credit")
    if debit_finish(transfer):
        fault_point("after_finish_debit")
        transfer_complete(transfer, actor)


def debit_prepare(transfer: Transfer, actor: Actor) -> bool:
    """Step 2, the debit leg prepared in the source ledger's own transaction; a refusal aborts the
    transfer (False). Also how a hold keeps its amount (``transfers.services.transfer_hold``)."""
    try:
        leg_prepare(transfer)
    except TransferRefused as refused:
        transfer_abort_decide(transfer, actor, refused.error)
        return False
    except CommitOutcomeUnknown:
        # Prepared or not, nothing is decided: aborting voids the leg (or tombstones it) either way.
        transfer_abort_decide(
            transfer,
            actor,
            LedgerUnavailable(f"Ledger {transfer.source_ledger} did not answer; the transfer was not made."),
            legs_to_void=[Leg.DEBIT],
        )
        return False
    return True


def debit_finish(transfer: Transfer) -> bool:
    """Step 4 of a decided transfer, its prepared debit leg committed: True once done; False when
    the ledger did not answer, the transfer then marked COMMITTED for recovery to finish."""
    try:
        leg_commit(transfer, Leg.DEBIT)
    except (OperationalError, LockConflictGaveUp):
        logger.warning("transfer %s: decided, finishing the debit leg deferred to recovery", transfer.id)
        transfer_mark_committed(transfer)
        return False
    return True
