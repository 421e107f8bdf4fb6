"""How the engine's plain SQL (``transfers.ledger_sql``, ``transfers.batch_sql``,
``transfers.recovery_sql``) passes values to the backend and reads them back: parameters through
the backend's ``adapt_*`` operations, as Django's fields prepare them, and decimals read back
exactly (SQLite may hand back a float; it is rounded to the column's two places, as Django's own
converter does).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connections

from transfers.models import TransferLeg

CENT = Decimal("0.01")
UUID_FIELD = TransferLeg._meta.get_field("transfer_id")


def money_from_db(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value)).quantize(CENT)
    return Decimal(str(value)).quantize(CENT)


_last_now: dict[str, tuple[datetime, Any]] = {}


def db_datetime(alias: str, now: datetime) -> Any:
    """The backend's form of a timestamp. A step stamps all its rows with one ``now``: the last
    one adapted is kept per alias (the backend's conversion is pure)."""
    last = _last_now.get(alias)
    if last is not None and last[0] is now:
        return last[1]
    adapted = connections[alias].ops.adapt_datetimefield_value(now)
    _last_now[alias] = (now, adapted)
    return adapted


def db_date(alias: str, value: date) -> Any:
    return connections[alias].ops.adapt_datefield_value(value)


_native_uuid: dict[str, bool] = {}


def db_uuid(alias: str, value: uuid.UUID) -> Any:
    """Native UUID on MariaDB 10.7+, 32 hex digits elsewhere: ``UUIDField.get_db_prep_value``'s
    rule, with what the server is asked once per alias and process."""
    native = _native_uuid.get(alias)
    if native is None:
        native = _native_uuid[alias] = bool(connections[alias].features.has_native_uuid_field)
    if not isinstance(value, uuid.UUID):
        value = UUID_FIELD.to_python(value)
    return value if native else value.hex
