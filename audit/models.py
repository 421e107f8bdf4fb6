"""The audit trail. Rows are append-only: the app never updates or deletes them, and the database's
triggers refuse it too (migration 0007), but for the sealer's one filling-in of the chain fields
(or its mark on a row it refuses)."""

from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.db import models

from bankcore.actors import Channel


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    """Bulk writes are refused like single ones: the app never rewrites or removes the trail. Only
    the sealer (``audit.chain``) fills in the chain fields of unsealed rows, in SQL."""

    def update(self, **kwargs: Any) -> NoReturn:
        raise RuntimeError("audit events are append-only")

    def delete(self) -> NoReturn:
        raise RuntimeError("audit events are append-only")


class AuditEvent(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_name = models.CharField(max_length=150)
    channel = models.CharField(max_length=16, choices=Channel.CHOICES, db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64, db_index=True)
    ledger = models.CharField(max_length=16, blank=True, default="")
    changes = models.JSONField(default=dict)
    ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    # The row's own MAC under AUDIT_CHAIN_KEY, written with it (audit.chain.audit_event_mac): what
    # tells the sealer a row the application wrote from one inserted behind its back.
    row_mac = models.CharField(max_length=64, blank=True, default="", editable=False)
    # Hash chain: filled in id order by the sealer (audit.chain), so writers never contend on the
    # chain's tail. ``seq`` is the row's place in the chain: NULL until sealed, then 1, 2, 3…; a row
    # the sealer refused keeps NULL and has ``hash`` = audit.chain.REFUSED.
    seq = models.BigIntegerField(null=True, blank=True, unique=True, editable=False)
    prev_hash = models.CharField(max_length=64, blank=True, default="", editable=False)
    hash = models.CharField(max_length=64, blank=True, default="", editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return (
            f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action} {self.object_type}:{self.object_id}"
        )

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise RuntimeError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError("audit events are append-only")


class AuditChainHead(models.Model):
    """The one row that says where the sealed chain ends. The sealer locks it ``FOR UPDATE``, so
    two sealers never extend the chain at once; writers of audit events never touch it.

    ``head_mac`` is the chain key's HMAC of (``last_seq``, ``last_hash`` and, once the key was
    rotated, ``key_epochs``): without the key nobody can move the end of the chain back (the newest
    rows removed), or where a key took over (``audit.chain``)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    last_seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, blank=True, default="")
    head_mac = models.CharField(max_length=64, blank=True, default="")
    # Which key sealed which rows, once the key was rotated (``rotate_audit_chain_key``): a list of
    # [first seq, key fingerprint], each key sealing up to the next one's first row. Empty: every
    # keyed row was sealed with one key.
    key_epochs = models.JSONField(default=list, blank=True)
    sealed_at = models.DateTimeField(null=True, blank=True)
    # The outcome of the last full verification (None: never verified), for /metrics and the admin.
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_ok = models.BooleanField(null=True, blank=True)
    verified_problem = models.CharField(max_length=500, blank=True, default="")

    def __str__(self) -> str:
        return f"audit chain head: seq {self.last_seq}"
