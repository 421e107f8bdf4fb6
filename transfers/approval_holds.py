"""Four eyes, the amount held while a request waits: a request's hold is a PENDING transfer
(``transfers.services.transfer_hold``) decided ABORTED inside the transaction that closes the
request, and released after its commit. Requests not decided in time expire
(``approvals_expire``), and holds no request refers to are released (``holds_orphaned_release``),
both run with recovery.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from bankcore.actors import Actor
from bankcore.errors import ApplicationError
from transfers.approval_records import approval_event_record, approval_lock
from transfers.errors import ApprovalExpired
from transfers.models import Approval, Transfer
from transfers.services import transfer_hold_abort, transfer_hold_release

Status = Approval.Status
Kind = Approval.Kind


def approval_hold(approval: Approval) -> Transfer | None:
    """The transfer holding a PENDING or APPROVED request's amount (None: a request stored before
    amounts were held, which executes as a new transfer)."""
    if approval.transfer_id is None or approval.status not in (Status.PENDING, Status.APPROVED):
        return None
    return Transfer.objects.get(pk=approval.transfer_id)


def approval_hold_abort(approval: Approval, actor: Actor, error: ApplicationError) -> None:
    """Inside the transaction that closes the request: its hold decided ABORTED with it."""
    if approval.transfer_id is not None:
        hold = Transfer.objects.get(pk=approval.transfer_id)
        if hold.status == Transfer.Status.PENDING:
            transfer_hold_abort(actor=actor, transfer=hold, error=error)


def approval_close(approval: Approval, actor: Actor, status: str, error: ApplicationError) -> None:
    """PENDING → ``status`` (withdrawn, expired), with its event and its hold aborted."""
    now = timezone.now()
    Approval.objects.filter(pk=approval.pk, status=Status.PENDING).update(
        status=status, decided_at=now, reason=error.detail[:500]
    )
    approval.status, approval.decided_at, approval.reason = status, now, error.detail[:500]
    approval_event_record(approval, actor, f"approval.{status}")
    approval_hold_abort(approval, actor, error)


def approval_hold_release(approval: Approval) -> None:
    """After the commit that aborted a request's hold: release the amount (recovery does it if
    this cannot)."""
    if approval.transfer_id is not None:
        hold = Transfer.objects.get(pk=approval.transfer_id)
        if hold.status == Transfer.Status.ABORTED:
            transfer_hold_release(transfer=hold)


def approvals_expire(*, actor: Actor, now: datetime | None = None) -> int:
    """PENDING requests whose hold has ended (recovery aborted it past its deadline) or is past
    its deadline → EXPIRED, their amount released; a batch (which holds nothing) once
    ``APPROVAL_HOLD_SECONDS`` old. Run with recovery; returns how many."""
    now = now or timezone.now()
    held = Q(transfer__isnull=False) & (Q(transfer__status=Transfer.Status.ABORTED) | Q(transfer__deadline__lte=now))
    old_batch = Q(kind=Kind.BATCH, created_at__lte=now - timedelta(seconds=settings.APPROVAL_HOLD_SECONDS))
    due = Approval.objects.filter(status=Status.PENDING).filter(held | old_batch)
    count = 0
    for pk in list(due.values_list("pk", flat=True)[:500]):
        with transaction.atomic(using="default"):
            approval = approval_lock(pk)
            if approval.status != Status.PENDING:
                continue
            approval_close(approval, actor, Status.EXPIRED, ApprovalExpired("Not decided before its hold ended."))
        approval_hold_release(approval)
        count += 1
    return count


def holds_orphaned_release(*, actor: Actor, now: datetime | None = None) -> int:
    """Holds no request refers to (the process stopped between holding the amount and storing
    the request, and the form was not sent again): aborted and released once older than
    ``TRANSACTION_TIMEOUT``, rather than holding the money until their deadline. A hold is a
    PENDING transfer whose deadline lies beyond a transfer's timeout. Run with recovery; returns
    how many."""
    now = now or timezone.now()
    timeout = timedelta(seconds=settings.TRANSACTION_TIMEOUT)
    orphans = (
        Transfer.objects.filter(status=Transfer.Status.PENDING, created_at__lt=now - timeout)
        .filter(deadline__gt=models.F("created_at") + timeout)
        .exclude(pk__in=Approval.objects.filter(transfer__isnull=False).values("transfer_id"))
    )
    count = 0
    for hold in list(orphans[:500]):
        if transfer_hold_abort(actor=actor, transfer=hold, error=ApprovalExpired("No request holds this amount.")):
            transfer_hold_release(transfer=hold)
            count += 1
    return count
