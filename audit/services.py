"""Writing the audit trail. Call these inside the transaction of the change they record."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit.logfile import audit_log_write
from audit.models import AuditEvent
from bankcore.actors import Actor


def audit_event_record(
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: str,
    ledger: str = "",
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event in ``default``. When called inside a ledger's atomic block, wrap the
    ledger block in ``transaction.atomic(using="default")`` first: the ledger commits first and the
    event commits only if it did (a crash between the two commits can lose the event, never invent
    one). The row is inserted unsealed (``audit.chain`` hashes it shortly after) and copied to the
    audit file once its transaction commits."""
    # No savepoint: inside the caller's transaction the event lives or dies with the change (and
    # a savepoint would cost two more round trips per transfer).
    with transaction.atomic(using="default", savepoint=False):
        event = AuditEvent.objects.using("default").create(
            actor_id=actor.user_id,
            actor_name=actor.username or actor.channel,
            channel=actor.channel,
            action=action,
            object_type=object_type,
            object_id=object_id,
            ledger=ledger,
            changes=changes or {},
            ip=actor.ip,
            request_id=actor.request_id,
        )
        transaction.on_commit(lambda: audit_log_write(_file_record(event)), using="default")
    return event


def _file_record(event: AuditEvent) -> dict[str, Any]:
    return {
        "type": "event",
        "event_id": event.pk,
        "action": event.action,
        "actor": event.actor_name,
        "actor_id": event.actor_id,
        "channel": event.channel,
        "ip": event.ip,
        "request_id": event.request_id,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "ledger": event.ledger,
        "changes": event.changes,
    }
