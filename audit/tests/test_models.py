"""The database itself keeps the audit trail append-only, even when the app is bypassed: it refuses
to delete an audit event, and every update but the sealer's one filling-in of an unsealed event's
chain fields."""

from typing import Any

import pytest
from django.db import DatabaseError, connections, transaction

from audit.chain import GENESIS, audit_chain_seal, audit_chain_verify
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _refused(sql: str, params: list[Any]) -> None:
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(using="default"):
        with connections["default"].cursor() as cursor:
            cursor.execute(sql.format(table=AuditEvent._meta.db_table), params)


def _trail() -> list[dict[str, Any]]:
    return [dict(row) for row in AuditEvent.objects.order_by("id").values()]


def test_the_database_refuses_to_delete_or_rewrite_a_sealed_event(make_account):
    make_account("db1", "10.00")
    make_account("db2", "20.00")
    audit_chain_seal()
    event = AuditEvent.objects.order_by("seq")[1]
    before = _trail()

    _refused("DELETE FROM {table} WHERE id = %s", [event.pk])
    _refused("DELETE FROM {table}", [])
    _refused("UPDATE {table} SET actor_name = %s WHERE id = %s", ["somebody-else", event.pk])
    _refused("UPDATE {table} SET hash = %s WHERE id = %s", ["f" * 64, event.pk])  # sealed again
    _refused("UPDATE {table} SET seq = NULL, prev_hash = '', hash = '' WHERE id = %s", [event.pk])  # unsealed

    assert _trail() == before
    assert audit_chain_verify().ok


def test_the_database_lets_only_the_sealer_write_to_an_unsealed_event(make_account):
    make_account("db1", "10.00")
    event = AuditEvent.objects.order_by("id").first()
    assert event is not None and event.seq is None
    before = _trail()

    # Not its content, not its content together with the chain fields, not half the chain fields.
    _refused("UPDATE {table} SET actor_name = %s WHERE id = %s", ["somebody-else", event.pk])
    _refused(
        "UPDATE {table} SET seq = %s, prev_hash = %s, hash = %s, action = %s WHERE id = %s",
        [1, GENESIS, "a" * 64, "nothing.happened", event.pk],
    )
    _refused("UPDATE {table} SET seq = %s WHERE id = %s", [1, event.pk])
    assert _trail() == before

    # The sealer's write goes through, once: its chain verifies.
    assert audit_chain_seal().sealed == len(before)
    assert audit_chain_verify().ok
