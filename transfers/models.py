"""The transfer record (control plane, ``default``) and the recovery table (every ledger).

A ``Transfer`` is the coordinator's view: PENDING → COMMITTED → COMPLETED, or → ABORTED with a
reason code. Each ledger keeps the ``TransferLeg`` rows of the transfers that touch it, keyed
``(transfer_id, leg)``: PREPARED → COMMITTED or VOIDED. A VOIDED row with no prepared amount is a
tombstone left by a void that arrived before its prepare, so the late prepare fails on the unique
key (Seata's empty-rollback and suspension rules).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from accounts.models import Account, money_field
from bankcore.actors import Channel


class TransferBatch(models.Model):
    """Transfers submitted together (``transfers.batch``): the batch's own idempotency record and
    the order of its items. Each item is a ``Transfer`` of its own (``batch``, ``batch_position``),
    with its own key, outcome and replay."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client_id = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_hash = models.CharField(max_length=64)
    channel = models.CharField(max_length=16, choices=Channel.CHOICES)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    item_count = models.PositiveIntegerField()
    # The amounts asked for, summed per currency named ("" for items that take their source
    # account's currency), as decimal strings.
    totals = models.JSONField(default=dict)

    # Not a column: set by transfer_batch_submit to say whether the idempotency key was seen before.
    replayed: bool = False

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["client_id", "idempotency_key"], name="transfer_batch_idempotency_key_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"batch {self.id} of {self.item_count}"


class Transfer(models.Model):
    class Kind(models.TextChoices):
        TRANSFER = "transfer", "Transfer"
        DEPOSIT = "deposit", "Cash deposit"
        WITHDRAWAL = "withdrawal", "Cash withdrawal"
        REVERSAL = "reversal", "Reversal"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        COMMITTED = "committed", "Committed"
        COMPLETED = "completed", "Completed"
        ABORTED = "aborted", "Aborted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TRANSFER)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    source_account = models.CharField(max_length=14, db_index=True)
    source_ledger = models.CharField(max_length=16)
    destination_account = models.CharField(max_length=14, db_index=True)
    destination_ledger = models.CharField(max_length=16)
    amount = money_field()
    currency = models.CharField(max_length=3)
    reference = models.CharField(max_length=140, blank=True, default="")
    failure_code = models.CharField(max_length=64, blank=True, default="")
    failure_detail = models.CharField(max_length=500, blank=True, default="")
    # Idempotency: one (client, key) maps to one transfer for good; request_hash tells a replay
    # from a conflicting reuse of the key.
    client_id = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    request_hash = models.CharField(max_length=64)
    # At most one live reversal per transfer (enforced under a row lock in ``transfer_reverse``);
    # an aborted reversal may be followed by another attempt, hence not one-to-one.
    reversal_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversals")
    business_date = models.DateField()
    deadline = models.DateTimeField()
    channel = models.CharField(max_length=16, choices=Channel.CHOICES)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    committed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # The batch it was submitted in, and its place there (``transfers.batch``).
    batch = models.ForeignKey(TransferBatch, null=True, blank=True, on_delete=models.PROTECT, related_name="transfers")
    batch_position = models.PositiveIntegerField(null=True, blank=True)

    # Not a column: set by transfer_create to say whether the idempotency key was seen before.
    replayed: bool = False

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="transfer_amount_positive"),
            models.UniqueConstraint(fields=["client_id", "idempotency_key"], name="transfer_idempotency_key_unique"),
        ]
        indexes = [models.Index(fields=["status", "deadline"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} {self.amount} {self.currency} [{self.status}]"

    @property
    def is_cross_ledger(self) -> bool:
        return self.source_ledger != self.destination_ledger

    @property
    def is_final(self) -> bool:
        return self.status in (self.Status.COMPLETED, self.Status.ABORTED)


class TransferLeg(models.Model):
    """The recovery table: one row per (transfer, leg) in the leg's ledger."""

    class Leg(models.TextChoices):
        DEBIT = "debit", "Debit"
        CREDIT = "credit", "Credit"

    class State(models.TextChoices):
        PREPARED = "prepared", "Prepared"
        COMMITTED = "committed", "Committed"
        VOIDED = "voided", "Voided"

    transfer_id = models.UUIDField()
    leg = models.CharField(max_length=8, choices=Leg.choices)
    # NULL only on a tombstone for a leg that was never prepared.
    account = models.ForeignKey(Account, null=True, on_delete=models.PROTECT, related_name="legs")
    amount = money_field()
    state = models.CharField(max_length=16, choices=State.choices)
    kind = models.CharField(max_length=16, choices=Transfer.Kind.choices)
    business_date = models.DateField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["transfer_id", "leg"], name="transfer_leg_unique"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="transfer_leg_amount_non_negative"),
        ]
        indexes = [
            models.Index(fields=["state", "created_at"]),
            # The daily limit sums a source account's debit legs of one business day.
            models.Index(fields=["account", "business_date", "leg"]),
        ]

    def __str__(self) -> str:
        return f"{self.transfer_id}/{self.leg} [{self.state}]"


class ReconciliationRun(models.Model):
    """The outcome of one reconciliation, kept so operations and supervisors can read the last one."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    ok = models.BooleanField()
    discrepancy_count = models.PositiveIntegerField(default=0)
    report = models.JSONField(default=dict)
    triggered_by = models.CharField(max_length=150)

    class Meta:
        ordering = ["-started_at"]
        get_latest_by = "started_at"

    def __str__(self) -> str:
        return f"reconciliation {self.started_at:%Y-%m-%d %H:%M:%S} {'OK' if self.ok else 'DISCREPANCIES'}"


class Approval(models.Model):
    """Four eyes (control plane, ``default``): a staff member's transfer, deposit or withdrawal that
    ``transfers.approval_rules.approval_required`` holds back waits here until a supervisor other than
    its maker approves it (then it executes, with the maker as its creator) or rejects it with a
    reason.

    PENDING → APPROVED → EXECUTED (or FAILED, when the engine refused it); PENDING → REJECTED,
    WITHDRAWN (by its maker) or EXPIRED. While PENDING or APPROVED, ``transfer`` is the hold: a
    PENDING transfer keeping the amount in the source account's pending debits, which execution
    completes and the other ends release.
    """

    class Kind(models.TextChoices):
        TRANSFER = "transfer", "Transfer"
        DEPOSIT = "deposit", "Cash deposit"
        WITHDRAWAL = "withdrawal", "Cash withdrawal"
        BATCH = "batch", "Bulk transfers"  # a BulkUpload's lines, decided as one

    class Status(models.TextChoices):
        PENDING = "pending", "Pending approval"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        EXECUTED = "executed", "Executed"
        FAILED = "failed", "Failed"
        WITHDRAWN = "withdrawn", "Withdrawn by its maker"
        EXPIRED = "expired", "Expired"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    # Transfers name both accounts; a deposit names only the destination, a withdrawal the source.
    source_account = models.CharField(max_length=14, blank=True, default="", editable=False)
    destination_account = models.CharField(max_length=14, blank=True, default="", editable=False)
    amount = money_field(editable=False)
    currency = models.CharField(max_length=3, editable=False)
    reference = models.CharField(max_length=140, blank=True, default="", editable=False)
    maker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", editable=False)
    maker_channel = models.CharField(max_length=16, choices=Channel.CHOICES, editable=False)
    checker = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )
    reason = models.CharField(max_length=500, blank=True, default="", editable=False)
    transfer = models.ForeignKey(
        Transfer, null=True, blank=True, on_delete=models.PROTECT, related_name="+", editable=False
    )
    failure_code = models.CharField(max_length=64, blank=True, default="", editable=False)
    failure_detail = models.CharField(max_length=500, blank=True, default="", editable=False)
    # The form's key: a request submitted twice waits once (one maker, one key, one request).
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True, editable=False)
    executed_at = models.DateTimeField(null=True, blank=True, editable=False)

    # Not a column: set by money_movement_submit to say why the movement waits.
    why: str = ""

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="approval_amount_positive"),
            models.CheckConstraint(condition=~Q(checker=F("maker")), name="approval_checker_is_not_maker"),
            models.UniqueConstraint(fields=["maker", "idempotency_key"], name="approval_idempotency_key_unique"),
        ]
        permissions = [
            ("approve_approval", "Can approve or reject what waits for a second pair of eyes"),
            ("reverse_transfer", "Can reverse a completed transfer"),
            ("run_recovery", "Can run recovery on stuck transfers"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.amount} {self.currency} [{self.get_status_display()}]"

    @property
    def account(self) -> str:
        """The customer account a cash movement is for."""
        return self.destination_account if self.kind == self.Kind.DEPOSIT else self.source_account


class BulkUpload(models.Model):
    """A teller's CSV file of transfers (``transfers.bulk``): its lines as read and checked, kept
    from the preview to the result so that what is confirmed, approved and booked is what was
    shown. ``lines``: one dict per line of the file (its number, the five columns, the amount
    parsed, the problems found); ``results``: one dict per line sent to the engine."""

    class Status(models.TextChoices):
        PREVIEW = "preview", "Checked, not sent"
        WAITING = "waiting", "Waiting for a supervisor"
        DONE = "done", "Sent"
        CLOSED = "closed", "Not sent (rejected, withdrawn or expired)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    maker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # The upload form's nonce and the file's digest: the same form sent twice is one upload.
    upload_key = models.CharField(max_length=255)
    file_name = models.CharField(max_length=255, blank=True, default="")
    content_hash = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PREVIEW)
    lines = models.JSONField(default=list)
    totals = models.JSONField(default=dict)  # of the lines sent, per currency, as decimal strings
    sent_lines = models.JSONField(default=list)  # the line numbers sent (all, or those without problems)
    approval = models.ForeignKey(Approval, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    batch = models.ForeignKey(TransferBatch, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    results = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    executed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["maker", "upload_key"], name="bulk_upload_key_unique")]

    def __str__(self) -> str:
        return f"bulk upload {self.file_name or self.id} ({len(self.lines)} lines)"
