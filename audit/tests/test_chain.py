"""The audit trail is append-only and tamper-evident: the app refuses to rewrite it, and a row
changed directly in the database breaks the hash chain at that row."""

from typing import Any

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse

from audit.chain import audit_chain_check, audit_chain_seal, audit_chain_status, audit_chain_verify
from audit.models import AuditChainHead, AuditEvent
from conftest import run_manage
from transfers.services import transfer_create

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _table_update(sql: str, params: list[Any]) -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute(sql.format(table=AuditEvent._meta.db_table), params)


def test_the_app_never_updates_or_deletes_audit_rows(actor, make_account):
    make_account("db1", "10.00")
    event = AuditEvent.objects.order_by("id").first()
    assert event is not None
    with pytest.raises(RuntimeError, match="append-only"):
        event.save()
    with pytest.raises(RuntimeError, match="append-only"):
        event.delete()
    with pytest.raises(RuntimeError, match="append-only"):
        AuditEvent.objects.filter(pk=event.pk).update(action="nothing happened")
    with pytest.raises(RuntimeError, match="append-only"):
        AuditEvent.objects.all().delete()


def test_sealing_chains_every_row_in_id_order_and_verifies(actor, make_account):
    assert audit_chain_status() is None  # never verified
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="1.00")
    count = AuditEvent.objects.count()
    assert AuditEvent.objects.filter(seq__isnull=True).count() == count

    assert audit_chain_seal(batch_size=2) == count
    assert audit_chain_seal() == 0  # idempotent
    rows = list(AuditEvent.objects.order_by("seq"))
    assert [r.seq for r in rows] == list(range(1, count + 1))
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert all(rows[i].prev_hash == rows[i - 1].hash for i in range(1, count))
    assert AuditChainHead.objects.get().last_hash == rows[-1].hash

    report = audit_chain_check()
    assert report.ok and report.checked == count and audit_chain_status() is True


def test_a_direct_database_edit_is_found_at_its_row(actor, make_account, make_staff):
    for n in range(3):
        make_account("db1", f"{n + 1}00.00")
    audit_chain_seal()
    victim = AuditEvent.objects.order_by("seq")[3]
    later = AuditEvent.objects.order_by("seq")[5]
    assert run_manage("verify_audit_chain").returncode == 0

    # Someone with database access rewrites what a row says, then a later one too.
    _table_update("UPDATE {table} SET actor_name = %s WHERE id = %s", ["somebody-else", victim.pk])
    _table_update("UPDATE {table} SET changes = %s WHERE id = %s", ['{"amount": "1.00"}', later.pk])

    report = audit_chain_verify()
    assert not report.ok and report.broken_at == victim.pk and report.broken_seq == victim.seq
    assert report.checked == victim.seq - 1
    assert "changed after it was sealed" in report.problem
    result = run_manage("verify_audit_chain")
    assert result.returncode == 1
    assert f"audit event id {victim.pk} (#{victim.seq})" in result.stderr + result.stdout
    assert audit_chain_status() is False  # the command recorded it: /metrics says broken
    client = Client()
    client.force_login(make_staff("auditor"))
    page = client.get(reverse("admin:audit_auditevent_changelist")).content.decode()
    assert "BROKEN" in page and f"audit event id {victim.pk}" in page


def test_a_removed_row_and_a_relinked_row_are_found(actor, make_account):
    for n in range(3):
        make_account("db2", f"{n + 1}0.00")
    audit_chain_seal()
    rows = list(AuditEvent.objects.order_by("seq"))
    # Deleting the row behind the app's back leaves a gap in the sequence.
    _table_update("DELETE FROM {table} WHERE id = %s", [rows[2].pk])
    report = audit_chain_verify()
    assert not report.ok and report.broken_seq == rows[2].seq and "missing" in report.problem
    # Re-sealing by hand from the broken row on (without the previous hash) is found too.
    _table_update("UPDATE {table} SET seq = %s, prev_hash = %s WHERE id = %s", [rows[2].seq, "0" * 64, rows[3].pk])
    report = audit_chain_verify()
    assert not report.ok and report.broken_at == rows[3].pk


def test_the_newest_rows_removed_are_found_by_the_head(actor, make_account):
    make_account("db1", "10.00")
    audit_chain_seal()
    last = AuditEvent.objects.order_by("-seq").first()
    assert last is not None
    _table_update("DELETE FROM {table} WHERE id = %s", [last.pk])
    report = audit_chain_verify()
    assert not report.ok and "head says" in report.problem
