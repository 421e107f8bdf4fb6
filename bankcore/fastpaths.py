"""Where bankcore steps around a library's own way of doing something, for speed: every such
bypass is here and nowhere else.

Each one names the library behaviour it replaces and the gain measured for it: CPU-ms per API
transfer, the bypass against the library side by side, per round of ``bench/door.py --requests 300
--rounds 3 --baseline-tree`` (2026-12-07; docs/performance.md, "Library bypasses", with the noise
and the bypasses that did not beat it). ``bankcore/tests/test_fastpaths.py`` holds each to that
library's own result: an upgrade that changes what the library does fails a test there instead of
drifting silently in production.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

from auditlog.cid import get_cid
from auditlog.diff import get_fields_in_model
from django.contrib.auth import get_user_model
from django.db import connections, models, router
from django.db.models import Field
from django.http import HttpRequest
from django.utils import timezone
from django.utils.deprecation import MiddlewareMixin
from django.utils.encoding import smart_str
from django.utils.functional import cached_property
from rest_framework import serializers
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from bankcore.paths import is_api_request

if TYPE_CHECKING:  # only for annotations: this module loads before the apps (bankcore.db)
    from bankcore.actors import Actor

# --- DRF: a serializer's fields built once per class ------------------------------------------------
#
# Replaces: ``Serializer.fields``, which deep-copies every declared field for every instance
# (re-running each field's ``__init__``). Gain on the door, for the transfer's input and output
# serializers: 1.31, 3.44 and 2.91.


# DRF's own ``Serializer.fields``, called for an instance that keeps its own fields.
_DRF_FIELDS: cached_property[Any] = serializers.Serializer.__dict__["fields"]


class SharedFields(serializers.Serializer[Any]):
    """A serializer base: the class's one set of fields, bound to a template
    instance with no data, no context and not partial, shared by every instance. Safe because a
    field keeps only its configuration: what validation finds lives on the serializer
    (``_validated_data``, ``_errors``), and what a field reads from its root (``partial``,
    ``context``) is the template's. An instance that is partial or has a context gets its own
    fields, as in DRF."""

    _shared_fields: ClassVar[Any]  # set on each class that uses it (read from its own __dict__)

    @cached_property
    def fields(self) -> Any:
        if self.partial or self._context:
            return _DRF_FIELDS.func(self)
        cls = type(self)
        shared = cls.__dict__.get("_shared_fields")
        if shared is None:  # two threads may both build it; either result serves
            shared = _DRF_FIELDS.func(cls())
            cls._shared_fields = shared
        return shared


# --- simplejwt: a token's user read by one precompiled statement ------------------------------------
#
# Replaces: ``JWTAuthentication.get_user``'s ``User.objects.get(...)``, whose ORM query is compiled
# anew on every request. The row holds every concrete field of the user model and is built as the
# ORM would (``Model.from_db``); the checks on it stay the caller's. Gain on the door: 0.81, 0.70
# and 0.07; on a read (``GET accounts/{number}/``), 1.31, 0.39 and 0.69.


_Converter = Callable[[Any, Any, Any], Any]


@cache
def _user_lookup() -> tuple[str, str, list[str], Field[Any, Any], list[tuple[int, Any, list[_Converter]]]]:
    """Where and how a token's user is read, worked out once: the database alias, ``SELECT <every
    concrete field> FROM <user table> WHERE <USER_ID_FIELD> = %s``, the field names in the order
    ``Model.from_db`` takes them, the id field (which turns the claim into the column's value), and
    the converters the ORM applies to the row's values (the backend's and the fields' own, e.g. a
    date-time made aware), as its compiler does (``SQLCompiler.apply_converters``)."""
    model = get_user_model()
    using = router.db_for_read(model)
    connection = connections[using]
    lookup = model._meta.get_field(jwt_settings.USER_ID_FIELD)
    assert isinstance(lookup, Field)
    fields = model._meta.concrete_fields
    quote = connection.ops.quote_name
    sql = (
        f"SELECT {', '.join(quote(field.column) for field in fields)} FROM {quote(model._meta.db_table)} "
        f"WHERE {quote(lookup.column)} = %s"
    )
    converters = []
    for index, field in enumerate(fields):
        column = field.get_col(model._meta.db_table)
        found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if found:
            converters.append((index, column, found))
    return using, sql, [field.attname for field in fields], lookup, converters


def jwt_user(user_id: Any) -> Any:
    """The user whose ``USER_ID_FIELD`` is ``user_id``, or None; TypeError or ValueError for an id
    the field cannot take."""
    using, sql, names, lookup, converters = _user_lookup()
    value = lookup.get_prep_value(user_id)
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(sql, [value])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for index, column, functions in converters:
        for convert in functions:
            values[index] = convert(values[index], column, connection)
    return get_user_model().from_db(using, names, values)


# --- Django: session, CSRF, authentication and messages for the back office only --------------------
#
# Replaces: ``MiddlewareMixin.__call__`` of Django's four middleware for requests under /api/,
# which authenticate with a JWT (DRF), keep no session, set no cookie and show no message. Gain
# within noise (+0.31, -0.33, -0.13); kept for what it does: no cookie of an API request is read,
# so a forged ``sessionid`` costs no session lookup and no API answer varies on ``Cookie``.


class BackOfficeOnly(MiddlewareMixin):
    """Runs the Django middleware it is mixed into except for the partner API, whose requests go
    straight on. Mixed into subclasses of Django's own, so that the admin's checks
    (admin.E408–E410) still find them in MIDDLEWARE."""

    def __call__(self, request: HttpRequest) -> Any:
        if is_api_request(request):
            return self.get_response(request)
        return super().__call__(request)


# --- django-auditlog: a "created" entry written as one INSERT ------------------------------------------
#
# Replaces: ``LogEntry.objects.log_create`` and ``auditlog.diff.model_instance_diff(None, instance)``
# for a row the engine inserted with its own SQL (no ``post_save``, so auditlog's receiver never
# sees it). The INSERT is deferred onto the transaction's COMMIT round trip instead of one of its
# own. Gain on the service path (every transfer, whatever the door): 0.14, 0.37 and 0.83.


def auditlog_created_insert(instance: models.Model, *, actor: Actor) -> tuple[str, list[Any]]:
    """The INSERT of auditlog's "created" entry for ``instance`` and its parameters, with the actor
    and address of the ``Actor`` instead of auditlog's middleware context
    (``audit.services.auditlog_entry_created`` defers it into the transaction open on ``default``)."""
    from auditlog.models import LogEntry
    from django.contrib.contenttypes.models import ContentType

    pk = instance.pk
    sql = (
        f"INSERT INTO {LogEntry._meta.db_table} (content_type_id, object_pk, object_id, object_repr, "
        "serialized_data, action, changes_text, changes, actor_id, cid, remote_addr, remote_port, timestamp, "
        "additional_data, actor_email) VALUES (%s, %s, %s, %s, NULL, %s, '', %s, %s, %s, %s, NULL, %s, NULL, NULL)"
    )
    return sql, [
        ContentType.objects.db_manager("default").get_for_model(instance).pk,
        str(pk),
        pk if isinstance(pk, int) else None,
        smart_str(instance),
        LogEntry.Action.CREATE,
        json.dumps(auditlog_created_changes(instance)),
        actor.user_id,
        get_cid(),
        actor.ip,
        connections["default"].ops.adapt_datetimefield_value(timezone.now()),
    ]


_Renderer = Callable[[models.Model], "str | None"]
# Per model: (field name, how auditlog renders its value in a "created" entry).
_CREATED_RENDERERS: dict[type[models.Model], list[tuple[str, _Renderer]]] = {}


def auditlog_created_changes(instance: models.Model) -> dict[str, tuple[str, str]]:
    """What ``model_instance_diff(None, instance)`` returns: every tracked field as ("None", its
    value as auditlog writes it), leaving out plain fields that are None, as auditlog does."""
    model = type(instance)
    renderers = _CREATED_RENDERERS.get(model)
    if renderers is None:
        renderers = _CREATED_RENDERERS[model] = _created_renderers(model, instance)
    changes = {}
    for name, render in renderers:
        value = render(instance)
        if value is not None:
            changes[name] = ("None", value)
    return changes


def _created_renderers(model: type[models.Model], instance: models.Model) -> list[tuple[str, _Renderer]]:
    from auditlog.registry import auditlog  # its import loads auditlog's models

    options = auditlog.get_model_fields(model)
    renderers = []
    for field in get_fields_in_model(instance):
        if options["include_fields"] and field.name not in options["include_fields"]:
            continue
        if field.name in options["exclude_fields"]:
            continue
        if field.name in options["mask_fields"]:
            raise NotImplementedError(f"{model.__name__}.{field.name}: masked fields are auditlog's to render")
        renderers.append((field.name, _renderer(field)))
    return renderers


def _renderer(field: Any) -> _Renderer:
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
