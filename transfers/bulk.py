"""Bulk transfers from the back office: a teller's CSV file (payroll, settlements), checked line by
line (``transfers.admin_batches`` reads and checks it), kept as a ``BulkUpload``, then sent to the
batch engine (``transfers.batch.transfer_batch_submit``) as one batch.

Four eyes apply to the batch as a whole, by the rule singles follow
(``transfers.approval_rules.approval_required``): each currency's total and each source account's total
is asked about, as one movement of that amount. When one must wait, the whole batch waits as one
``Approval`` of kind ``batch`` (its amount: the largest currency's total, so that it counts in the
maker's day totals) until a supervisor other than the maker approves it here
(``bulk_approve``); rejecting and withdrawing are the queue's own (``approval_reject``,
``approval_withdraw``). A batch that waits holds nothing: a hold per line would be a thousand
holds to release on every end of the request, and each line's funds are checked again by the
engine when the batch executes, a refusal then being that line's outcome. A request not decided
within ``APPROVAL_HOLD_SECONDS`` expires (recovery's ``approvals_expire``, or approving it late).

Booked once: the batch's idempotency key and each line's are derived from the upload (its maker,
its form's nonce and the file's digest), so a confirm sent twice, or an execution run again after a
ledger outage, replays what was booked and makes only what was not.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_event_record
from bankcore.actors import Actor
from bankcore.errors import Conflict, NotFound, ValidationFailed
from transfers.approval_holds import approval_close
from transfers.approval_records import (
    approval_event_record,
    approval_lock,
    approval_pk,
    checker_check,
    decision_check,
    refusals_recorded,
)
from transfers.approval_rules import approval_required, maker_serialised, role_check
from transfers.batch import BatchItem, BatchOutcome, transfer_batch_submit
from transfers.errors import NOT_AN_OUTCOME, ApprovalExpired, ApprovalNotApproved
from transfers.models import Approval, BulkUpload, Transfer

ApprovalStatus = Approval.Status
CLOSED_APPROVALS = (ApprovalStatus.REJECTED, ApprovalStatus.WITHDRAWN, ApprovalStatus.EXPIRED)


class BulkNotFound(NotFound):
    code = "bulk_not_found"
    title = "No such bulk upload"


class BulkChanged(Conflict):
    code = "bulk_changed"
    title = "The confirmation is for another file"


class BulkHasProblems(ValidationFailed):
    code = "bulk_has_problems"
    title = "Some lines have problems"


class BulkNothingToSend(ValidationFailed):
    code = "bulk_nothing_to_send"
    title = "No line can be sent"


def bulk_upload_store(
    *, actor: Actor, upload_key: str, file_name: str, content_hash: str, lines: list[dict[str, Any]]
) -> BulkUpload:
    """Keep a checked file for its preview (the same upload form sent twice: the first one),
    recording the upload in the audit trail."""
    assert actor.user_id is not None
    earlier = BulkUpload.objects.filter(maker_id=actor.user_id, upload_key=upload_key).first()
    if earlier is not None:
        return earlier
    try:
        with transaction.atomic(using="default"):
            upload = BulkUpload.objects.create(
                maker_id=actor.user_id,
                upload_key=upload_key,
                file_name=file_name[:255],
                content_hash=content_hash,
                lines=lines,
                totals=bulk_totals(sendable(lines)),
            )
            audit_event_record(
                actor=actor,
                action="bulk.uploaded",
                object_type="bulk_upload",
                object_id=str(upload.pk),
                changes={
                    "file": upload.file_name,
                    "sha256": content_hash,
                    "lines": len(lines),
                    "lines_with_problems": sum(1 for line in lines if line["problems"]),
                    "totals": upload.totals,
                },
            )
    except IntegrityError:
        return BulkUpload.objects.get(maker_id=actor.user_id, upload_key=upload_key)
    return upload


def sendable(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if not line["problems"]]


def bulk_totals(lines: list[dict[str, Any]]) -> dict[str, str]:
    """Each currency's total of ``lines``, as decimal strings."""
    totals: dict[str, Decimal] = {}
    for line in lines:
        totals[line["currency"]] = totals.get(line["currency"], Decimal("0.00")) + Decimal(line["value"])
    return {currency: str(total) for currency, total in sorted(totals.items())}


def bulk_approval_why(*, user: Any, lines: list[dict[str, Any]]) -> str | None:
    """Why the batch of ``lines`` waits for a supervisor (None: it executes at once): each
    currency's total, then each source account's, asked as one movement of that amount."""
    for currency, total in bulk_totals(lines).items():
        why = approval_required(user=user, amount=Decimal(total))
        if why is not None:
            return f"the {currency} total: {why}"
    by_source: dict[str, Decimal] = {}
    for line in lines:
        by_source[line["source"]] = by_source.get(line["source"], Decimal("0.00")) + Decimal(line["value"])
    for source, amount in by_source.items():
        why = approval_required(user=user, amount=amount, account=source)
        if why is not None:
            return f"account {source}: {why}"
    return None


def _upload_of(upload_id: object, *, maker_id: int | None = None) -> BulkUpload:
    upload = BulkUpload.objects.filter(pk=str(upload_id)).first() if _is_uuid(upload_id) else None
    if upload is None or (maker_id is not None and upload.maker_id != maker_id):
        raise BulkNotFound(f"No bulk upload {upload_id}.")
    return upload


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def bulk_submit(*, actor: Actor, user: Any, upload_id: object, content_hash: str, drop_bad: bool) -> BulkUpload:
    """The teller's confirm: send the upload's lines (with ``drop_bad``, only those without
    problems) to the engine, or, when the batch needs four eyes, store its request. Sent again,
    it answers what the first did. Raises, sending nothing: ``BulkNotFound`` (not this maker's),
    ``BulkChanged`` (``content_hash`` is not the file's), ``BulkHasProblems``,
    ``BulkNothingToSend``, ``RoleRequired``, ``LedgerBusy``."""
    role_check(user=user, permission="transfers.add_transfer")
    upload = _upload_of(upload_id, maker_id=actor.user_id)
    if content_hash != upload.content_hash:
        raise BulkChanged("This confirmation is for another file than the one checked; upload it again.")
    with maker_serialised(user):
        upload.refresh_from_db()
        if upload.status != BulkUpload.Status.PREVIEW:
            return upload  # sent already: its request or its result
        if upload.sent_lines:  # sent before, a ledger did not answer: the same lines again
            return _bulk_execute(actor, upload)
        lines = sendable(upload.lines)
        if len(lines) != len(upload.lines) and not drop_bad:
            raise BulkHasProblems(
                f"{len(upload.lines) - len(lines)} lines have problems: correct the file, or confirm leaving them out."
            )
        if not lines:
            raise BulkNothingToSend("No line of this file can be sent.")
        upload.sent_lines = [line["line"] for line in lines]
        upload.totals = bulk_totals(lines)
        why = bulk_approval_why(user=user, lines=lines)
        if why is None:
            BulkUpload.objects.filter(pk=upload.pk).update(sent_lines=upload.sent_lines, totals=upload.totals)
            return _bulk_execute(actor, upload)
        return _bulk_request(actor, upload, why)


def _bulk_request(actor: Actor, upload: BulkUpload, why: str) -> BulkUpload:
    assert actor.user_id is not None  # bulk_submit's upload is its maker's
    currency, total = max(upload.totals.items(), key=lambda item: Decimal(item[1]))
    with transaction.atomic(using="default"):
        approval = Approval.objects.create(
            kind=Approval.Kind.BATCH,
            amount=Decimal(total),
            currency=currency,
            reference=f"{len(upload.sent_lines)} lines of {upload.file_name}"[:140],
            maker_id=actor.user_id,
            maker_channel=actor.channel,
            idempotency_key=f"bulk.{upload.pk.hex}",
        )
        upload.status, upload.approval = BulkUpload.Status.WAITING, approval
        upload.save(update_fields=["status", "approval", "sent_lines", "totals"])
        approval_event_record(
            approval, actor, "approval.requested", why=why, bulk_upload=str(upload.pk), totals=upload.totals
        )
    approval.why = why
    return upload


def _bulk_items(upload: BulkUpload) -> list[BatchItem]:
    sent = set(upload.sent_lines)
    return [
        BatchItem(
            source_account=line["source"],
            destination_account=line["destination"],
            amount=line["value"],
            currency=line["currency"],
            reference=line["reference"],
            idempotency_key=f"bulk.{upload.pk.hex}.{line['line']}",
        )
        for line in upload.lines
        if line["line"] in sent
    ]


def _result(line: int, outcome: BatchOutcome) -> dict[str, Any]:
    transfer, error = outcome.transfer, outcome.error
    if error is not None:
        status = "not sent" if error.code in NOT_AN_OUTCOME else "refused"
    else:
        status = "moved" if transfer is not None and transfer.status == Transfer.Status.COMPLETED else "in progress"
    return {
        "line": line,
        "status": status,
        "transfer_id": str(transfer.pk) if transfer is not None else "",
        "code": error.code if error is not None else "",
        "detail": error.detail if error is not None else "",
    }


def _bulk_execute(maker: Actor, upload: BulkUpload, *, checker: Actor | None = None) -> BulkUpload:
    """Send the upload's lines as one batch, as their maker; keep each line's outcome. When a
    ledger did not answer for some line, the upload stays as it was, to be sent again (its keys
    replay what moved)."""
    items = _bulk_items(upload)
    batch, outcomes = transfer_batch_submit(actor=maker, items=items, idempotency_key=f"bulk.{upload.pk.hex}")
    upload.results = [_result(line, outcome) for line, outcome in zip(upload.sent_lines, outcomes, strict=True)]
    upload.batch = batch
    again = any(result["status"] == "not sent" for result in upload.results)
    counts = {
        status: sum(1 for r in upload.results if r["status"] == status)
        for status in ("moved", "in progress", "refused", "not sent")
    }
    with transaction.atomic(using="default"):
        if not again:
            upload.status, upload.executed_at = BulkUpload.Status.DONE, timezone.now()
        upload.save(update_fields=["results", "batch", "status", "executed_at"])
        audit_event_record(
            actor=checker or maker,
            action="bulk.executed",
            object_type="bulk_upload",
            object_id=str(upload.pk),
            changes={"batch": str(batch.pk), "maker": upload.maker_id, "totals": upload.totals, **counts},
        )
    return upload


@refusals_recorded("approve")
def bulk_approve(*, actor: Actor, approval_id: object) -> BulkUpload:
    """A supervisor other than the maker approves a waiting batch, which then executes (see
    ``bulk_execute_approved``). Raises what ``approval_approve`` raises, changing nothing."""
    with transaction.atomic(using="default"):
        approval = approval_lock(approval_id)
        decision_check(actor, approval, verb="approve")
        if approval.kind != Approval.Kind.BATCH:
            raise BulkNotFound(f"Request #{approval.pk} is not a bulk upload.")
        now = timezone.now()
        expired = approval.created_at + timedelta(seconds=settings.APPROVAL_HOLD_SECONDS) <= now
        if expired:
            approval_close(approval, actor, ApprovalStatus.EXPIRED, ApprovalExpired("Not decided in time."))
        else:
            Approval.objects.filter(pk=approval.pk).update(
                status=ApprovalStatus.APPROVED, checker_id=actor.user_id, decided_at=now
            )
            approval.status, approval.checker_id = ApprovalStatus.APPROVED, actor.user_id
            approval_event_record(approval, actor, "approval.approved", checker=actor.user_id)
    if expired:
        raise ApprovalExpired("This request expired before it was approved; nothing was sent.")
    return bulk_execute_approved(actor=actor, approval_id=approval.pk)


@refusals_recorded("execute")
def bulk_execute_approved(*, actor: Actor, approval_id: object) -> BulkUpload:
    """Run an approved batch through the engine as its maker (again, when a ledger did not answer
    the first time: what moved is replayed, not moved twice); the request is then EXECUTED."""
    approval = Approval.objects.filter(pk=approval_pk(approval_id)).select_related("maker").first()
    upload = BulkUpload.objects.filter(approval=approval).first() if approval is not None else None
    if approval is None or upload is None:
        raise BulkNotFound(f"No bulk request {approval_id}.")
    if approval.status != ApprovalStatus.APPROVED:
        raise ApprovalNotApproved(f"This request is {approval.get_status_display().lower()}, not approved.")
    checker_check(actor, approval, verb="execute")
    maker = Actor(
        channel=actor.channel,
        user_id=approval.maker_id,
        username=approval.maker.get_username(),
        ip=actor.ip,
        request_id=actor.request_id,
    )
    upload = _bulk_execute(maker, upload, checker=actor)
    if upload.status == BulkUpload.Status.DONE:
        with transaction.atomic(using="default"):
            if Approval.objects.filter(pk=approval.pk, status=ApprovalStatus.APPROVED).update(
                status=ApprovalStatus.EXECUTED, executed_at=timezone.now()
            ):
                approval_event_record(
                    approval, actor, "approval.executed", checker=actor.user_id, bulk_upload=str(upload.pk)
                )
    return upload


def bulk_state(upload: BulkUpload) -> str:
    """The upload's state, with its request's end when a supervisor or its maker closed it."""
    if upload.status == BulkUpload.Status.WAITING and upload.approval is not None:
        if upload.approval.status in CLOSED_APPROVALS:
            return BulkUpload.Status.CLOSED
    return upload.status
