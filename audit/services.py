"""Writing the audit trail. Call these inside the transaction of the change they record."""

from __future__ import annotations

import json
from typing import Any

from django.db import connections, models, transaction
from django.utils import timezone

from audit.chain import audit_event_mac
from audit.logfile import audit_log_write
from audit.models import AuditEvent
from bankcore.actors import Actor
from bankcore.db import Result, defer, on_commit
from bankcore.fastpaths import auditlog_created_insert

_EVENT_TABLE = AuditEvent._meta.db_table


def audit_event_record(
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: str,
    ledger: str = "",
    changes: dict[str, Any] | None = None,
    only_if: str = "",
) -> AuditEvent:
    """Append one audit event in ``default``, as part of the transaction open there (Django's
    ``atomic`` or ``bankcore.db.server_transaction``): the event lives or dies with the change.
    When called inside a ledger's atomic block, wrap the ledger block in
    ``transaction.atomic(using="default")`` first: the ledger commits first and the event commits
    only if it did (a crash between the two commits can lose the event, never invent one). The row
    is inserted unsealed with its own MAC (``audit.chain.audit_event_mac``: the sealer chains only
    rows that carry a right one; ``audit.chain`` hashes it shortly after) and copied to the audit
    file once its transaction commits.

    One INSERT written out, not ``objects.create()``: every transfer writes an event, and the
    ORM's compile and save machinery cost more CPU than the statement (``bench/run.py``).

    ``only_if``: a condition of the batched step it belongs to (``transfers.ledger_sql.VERDICT_OK``):
    the row is written, and its file line later, only when it holds; ``pk`` stays None otherwise."""
    event = AuditEvent(
        created_at=timezone.now(),
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
    event.row_mac = audit_event_mac(event)

    def set_pk(result: Result) -> None:
        if result.rowcount == 1:
            event.pk = result.lastrowid

    values = (
        "SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '', '' FROM DUAL WHERE " + only_if
        if only_if
        else ("VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '', '')")
    )
    # Deferred: inside the engine's server_transaction it rides on the COMMIT's round trip; the
    # audit file line, written after the commit, finds the id set by then.
    defer(
        "default",
        f"INSERT INTO {_EVENT_TABLE} (created_at, actor_id, actor_name, channel, action, object_type, "
        f"object_id, ledger, changes, ip, request_id, row_mac, prev_hash, hash) {values}",
        [
            connections["default"].ops.adapt_datetimefield_value(event.created_at),
            event.actor_id,
            event.actor_name,
            event.channel,
            event.action,
            event.object_type,
            event.object_id,
            event.ledger,
            json.dumps(event.changes),
            event.ip,
            event.request_id,
            event.row_mac,
        ],
        on_result=set_pk,
    )
    event._state.adding, event._state.db = False, "default"

    def write_line() -> None:
        if event.pk is not None:
            audit_log_write(_file_record(event))

    on_commit("default", write_line)
    return event


def audit_refusal_record(
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: str,
    code: str,
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    """A staff action refused for who asked (a permission missing, a maker deciding their own
    request): the audit event ``<action>.refused`` naming the actor and the refusal's stable
    ``code``, committed on its own, after the refused change rolled back: the attempt stays on
    record though nothing changed. Call it outside the refused change's transaction."""
    with transaction.atomic(using="default"):
        return audit_event_record(
            actor=actor,
            action=f"{action}.refused",
            object_type=object_type,
            object_id=object_id,
            changes={"code": code, **(changes or {})},
        )


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


def auditlog_entry_created(instance: models.Model, *, actor: Actor) -> None:
    """django-auditlog's "created" entry for a row the caller inserted with its own SQL (no
    ``post_save``, so auditlog's receiver never sees it), written in the transaction open on
    ``default`` (``bankcore.fastpaths.auditlog_created_insert``)."""
    defer("default", *auditlog_created_insert(instance, actor=actor))
