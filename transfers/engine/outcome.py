"""A transfer's state in the control plane (``default``) and its audit events: COMPLETED, ABORTED
with a reason, and the COMMITTED hint. Each is a conditional update, so that a coordinator and
recovery (or two recovery workers) record an outcome once, whoever gets there first.

The decision itself lives in the ledgers (a COMMITTED leg, or recovery's tombstone: see
``transfers.engine.legs``); these only record it where the doors and recovery look first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.db import OperationalError, transaction
from django.utils import timezone

from audit.services import audit_event_record
from bankcore.actors import Actor
from bankcore.db import LockConflictGaveUp, atomic_with_retry
from bankcore.errors import ApplicationError
from bankcore.faults import fault_point
from transfers import ledger_sql
from transfers.engine.legs import leg_void
from transfers.errors import RECORDED_REFUSALS, TransferTimedOut
from transfers.models import Transfer

logger = logging.getLogger(__name__)

Status = Transfer.Status


def transfer_complete(transfer: Transfer, actor: Actor) -> bool:
    """PENDING/COMMITTED → COMPLETED with its audit event; True if this call did it (otherwise
    ``transfer`` is refreshed). Call it once the transfer's legs are committed."""
    now = timezone.now()

    def complete() -> bool:
        if not ledger_sql.transfer_mark_completed(transfer.id, now=now):
            return False
        transfer_event(transfer, actor, "transfer.completed")
        return True

    done = atomic_with_retry("default", complete)
    if done:
        transfer.status, transfer.finished_at = Status.COMPLETED, now
        transfer.committed_at = transfer.committed_at or now
    else:
        transfer.refresh_from_db()
    return done


def transfer_abort_decide(
    transfer: Transfer, actor: Actor, error: ApplicationError, *, legs_to_void: Sequence[str] = ()
) -> bool:
    """PENDING → ABORTED with ``error`` as the reason, then void ``legs_to_void`` (a leg never
    prepared gets a tombstone; recovery voids anything a failure here leaves behind). True if this
    call aborted it. Call it only while no leg is COMMITTED, or after a tombstone holds the
    decision leg's key."""
    aborted = transfer_abort_record(transfer, actor, error)
    fault_point("after_decide_abort")
    if transfer.status != Status.ABORTED:
        return False
    for leg in legs_to_void:
        try:
            leg_void(transfer, leg)
        except (OperationalError, LockConflictGaveUp):
            logger.warning("transfer %s: voiding the %s leg deferred to recovery", transfer.id, leg)
    return aborted


def transfer_abort_record(transfer: Transfer, actor: Actor, error: ApplicationError) -> bool:
    """PENDING → ABORTED with the reason and its audit event, in ``default`` (inside the caller's
    transaction, if any); True if this call did it (otherwise ``transfer`` is refreshed: someone
    else decided it). Voids nothing."""
    now = timezone.now()
    with transaction.atomic(using="default"):
        aborted = Transfer.objects.filter(pk=transfer.pk, status=Status.PENDING).update(
            status=Status.ABORTED, failure_code=error.code, failure_detail=error.detail[:500], finished_at=now
        )
        if aborted:
            transfer_event(transfer, actor, "transfer.aborted", failure_code=error.code)
    if aborted:
        transfer.status, transfer.finished_at = Status.ABORTED, now
        transfer.failure_code, transfer.failure_detail = error.code, error.detail[:500]
    else:
        transfer.refresh_from_db()
    return bool(aborted)


def transfer_mark_committed(transfer: Transfer) -> None:
    """Say in the control plane that a transfer is decided but not finished (the API answers 202
    "committed"; recovery finishes it after its grace period). Only a hint: the decision itself is
    the committed leg, which recovery reads when this could not be written."""
    now = timezone.now()
    try:
        if ledger_sql.transfer_mark_committed(transfer.id, now=now):
            transfer.status, transfer.committed_at = Status.COMMITTED, now
    except OperationalError:
        logger.warning("transfer %s: the control plane did not take the committed hint", transfer.id)


def transfer_refusal_error(transfer: Transfer) -> ApplicationError | None:
    """The error an ABORTED transfer was refused with, for the doors to render (None if it was not
    aborted); its ``transfer`` attribute is the transfer."""
    if transfer.status != Status.ABORTED:
        return None
    error_class = RECORDED_REFUSALS.get(transfer.failure_code, TransferTimedOut)
    error = error_class(transfer.failure_detail or None, extra={"transfer_id": str(transfer.id)})
    error.transfer = transfer
    return error


def transfer_event(transfer: Transfer, actor: Actor, action: str, *, only_if: str = "", **extra: object) -> None:
    """The transfer's audit event ``action`` (``transfer.completed``, ``transfer.aborted``), in
    the caller's ``default`` transaction; with ``only_if``, written only if that verdict holds."""
    audit_event_record(
        only_if=only_if,
        actor=actor,
        action=action,
        object_type="transfer",
        object_id=str(transfer.id),
        changes={
            "kind": transfer.kind,
            "source": transfer.source_account,
            "destination": transfer.destination_account,
            "amount": str(transfer.amount),
            "currency": transfer.currency,
            "reference": transfer.reference,
            "created_by": transfer.created_by_id,
            **({"reversal_of": str(transfer.reversal_of_id)} if transfer.reversal_of_id else {}),
            **extra,
        },
    )
