"""Writing the audit trail. Call these inside the transaction of the change they record."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC
from typing import Any

from auditlog.cid import get_cid
from auditlog.diff import get_fields_in_model
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.contrib.contenttypes.models import ContentType
from django.db import connections, models, transaction
from django.utils import timezone
from django.utils.encoding import smart_str

from audit.chain import audit_event_mac
from audit.logfile import audit_log_write
from audit.models import AuditEvent
from bankcore.actors import Actor
from bankcore.db import Result, defer, on_commit

_EVENT_TABLE = AuditEvent._meta.db_table
_LOG_ENTRY_TABLE = LogEntry._meta.db_table


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
    ``post_save``, so auditlog's receiver never sees it): the changes auditlog's own
    ``model_instance_diff`` would give (``_created_changes``), written as one INSERT in the
    transaction open on ``default``, with the actor and address of the ``Actor`` instead of
    auditlog's middleware context."""
    pk = instance.pk
    defer(
        "default",
        f"INSERT INTO {_LOG_ENTRY_TABLE} (content_type_id, object_pk, object_id, object_repr, serialized_data, "
        "action, changes_text, changes, actor_id, cid, remote_addr, remote_port, timestamp, additional_data, "
        "actor_email) VALUES (%s, %s, %s, %s, NULL, %s, '', %s, %s, %s, %s, NULL, %s, NULL, NULL)",
        [
            ContentType.objects.db_manager("default").get_for_model(instance).pk,
            str(pk),
            pk if isinstance(pk, int) else None,
            smart_str(instance),
            LogEntry.Action.CREATE,
            json.dumps(_created_changes(instance)),
            actor.user_id,
            get_cid(),
            actor.ip,
            connections["default"].ops.adapt_datetimefield_value(timezone.now()),
        ],
    )


# How auditlog renders a field's value in a "created" entry (None: the field is left out).
Renderer = Callable[[models.Model], str | None]
# Per model: (field name, its renderer).
_CREATED_RENDERERS: dict[type[models.Model], list[tuple[str, Renderer]]] = {}


def _created_changes(instance: models.Model) -> dict[str, tuple[str, str]]:
    """What ``auditlog.diff.model_instance_diff(None, instance)`` returns, without its generic
    per-field machinery (a quarter of a transfer's Python time): every tracked field as ("None",
    its value as auditlog writes it), leaving out plain fields that are None, as auditlog does.
    ``audit/tests`` holds the two side by side."""
    model = type(instance)
    renderers = _CREATED_RENDERERS.get(model)
    if renderers is None:
        renderers = _CREATED_RENDERERS[model] = _created_renderers(model, instance)
    changes: dict[str, tuple[str, str]] = {}
    for name, render in renderers:
        value = render(instance)
        if value is not None:
            changes[name] = ("None", value)
    return changes


def _created_renderers(model: type[models.Model], instance: models.Model) -> list[tuple[str, Renderer]]:
    options = auditlog.get_model_fields(model)
    renderers: list[tuple[str, Renderer]] = []
    for field in get_fields_in_model(instance):
        if options["include_fields"] and field.name not in options["include_fields"]:
            continue
        if field.name in options["exclude_fields"]:
            continue
        if field.name in options["mask_fields"]:
            raise NotImplementedError(f"{model.__name__}.{field.name}: masked fields are auditlog's to render")
        renderers.append((field.name, _renderer(field)))
    return renderers


def _renderer(field: models.Field[Any, Any]) -> Renderer:
    name = field.name
    if isinstance(field, models.DateTimeField):

        def render_datetime(obj: models.Model) -> str | None:
            value = getattr(obj, name)
            if value is not None and timezone.is_aware(value):
                value = timezone.make_naive(value, timezone=UTC)
            return str(value)

        return render_datetime
    if isinstance(field, models.JSONField):
        return lambda obj: json.dumps(getattr(obj, name), sort_keys=True, cls=field.encoder)
    if (field.one_to_one or field.many_to_one) and hasattr(field, "rel_class"):
        attname = field.get_attname()
        return lambda obj: str(getattr(obj, attname))  # a None key is written as "None"

    def render_plain(obj: models.Model) -> str | None:
        value = smart_str(getattr(obj, name))
        return None if value == "None" else value

    return render_plain
