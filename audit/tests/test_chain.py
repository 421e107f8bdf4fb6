"""The audit trail is append-only and tamper-evident: the app refuses to rewrite it, and a row
changed directly in the database breaks the hash chain at that row, also when whoever changed it
recomputed the chain, unless they hold the chain key (AUDIT_CHAIN_KEY, never in the database)."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.chain import (
    GENESIS,
    REFUSED,
    AuditChainError,
    audit_chain_check,
    audit_chain_rotate_key,
    audit_chain_seal,
    audit_chain_status,
    audit_chain_verify,
    audit_event_hash,
    audit_event_mac,
    key_fingerprint,
)
from audit.models import AuditChainHead, AuditEvent
from bankcore.testing.processes import run_manage
from transfers.services import transfer_create

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _sql(sql: str, params: list[Any]) -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute(sql.format(table=AuditEvent._meta.db_table), params)


@contextmanager
def _triggers_lifted() -> Iterator[None]:
    """The audit table without its append-only triggers for the block: what someone who may drop
    and create triggers can do (or who restores a doctored dump). Then only the chain finds it."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
            "WHERE TRIGGER_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = %s",
            [AuditEvent._meta.db_table],
        )
        names = [name for (name,) in cursor.fetchall()]
        assert names, "the audit table has no triggers to lift"
        definitions = []
        for name in names:
            cursor.execute(f"SHOW CREATE TRIGGER {name}")
            definitions.append(cursor.fetchone()[2])
            cursor.execute(f"DROP TRIGGER {name}")
    try:
        yield
    finally:
        with connections["default"].cursor() as cursor:
            for definition in definitions:
                cursor.execute(definition)


def _table_update(sql: str, params: list[Any]) -> None:
    """A statement on the audit table behind the app's back, as someone with database access and
    the privilege to lift its triggers."""
    with _triggers_lifted():
        _sql(sql, params)


def _rechain(from_seq: int, *, key: bytes, through: int | None = None) -> None:
    """What someone with write access but without the chain key does after changing a row: recompute
    every hash and row MAC from ``from_seq`` on (with a key of their own) and point the head at the
    new end, so that every link and the head agree again. ``through``: stop after that row (and leave the head
    alone)."""
    prev = AuditEvent.objects.get(seq=from_seq - 1).hash if from_seq > 1 else GENESIS
    rows = AuditEvent.objects.filter(seq__gte=from_seq, seq__lte=through or 2**62).order_by("seq")
    with _triggers_lifted():
        for row in rows:
            assert row.seq is not None
            digest = audit_event_hash(row, seq=row.seq, prev_hash=prev, key=key)
            _sql(
                "UPDATE {table} SET prev_hash = %s, hash = %s, row_mac = %s WHERE id = %s",
                [prev, digest, audit_event_mac(row, key=key), row.pk],
            )
            prev = digest
    if through is None:
        AuditChainHead.objects.filter(pk=1).update(last_hash=prev)


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

    assert audit_chain_seal(batch_size=2).sealed == count
    assert audit_chain_seal().sealed == 0  # idempotent
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
    assert victim.seq is not None
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


# The trail is tampered with on purpose: reconciliation then finds the account it no longer explains.
@pytest.mark.books_may_not_balance
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


def test_a_row_rewritten_and_rehashed_without_the_key_is_found(actor, make_account):
    for n in range(3):
        make_account("db1", f"{n + 1}00.00")
    audit_chain_seal()
    victim = AuditEvent.objects.order_by("seq")[2]
    assert victim.seq is not None
    assert audit_chain_verify().ok

    # given someone who changes a row and recomputes the chain from it with a key of their own
    _table_update("UPDATE {table} SET actor_name = %s WHERE id = %s", ["somebody-else", victim.pk])
    _rechain(victim.seq, key=b"")

    # then the row is the first broken link, though every link and the head agree
    report = audit_chain_verify()
    assert not report.ok and report.broken_at == victim.pk and report.checked == victim.seq - 1
    assert "changed after it was sealed" in report.problem and "AUDIT_CHAIN_KEY" in report.problem

    # and so it is with a guess at the key
    _rechain(victim.seq, key=b"a-guess-at-the-chain-key-0123456789abcdef")
    report = audit_chain_verify()
    assert not report.ok and report.broken_at == victim.pk


# The trail is tampered with on purpose: reconciliation then finds the account it no longer explains.
@pytest.mark.books_may_not_balance
def test_the_newest_rows_cut_off_and_the_head_moved_back_are_found(actor, make_account):
    make_account("db1", "10.00")
    make_account("db2", "20.00")
    audit_chain_seal()
    rows = list(AuditEvent.objects.order_by("seq"))
    # given the newest two rows removed and the head pointed at the row before them: every link
    # that is left holds, and without the key nothing else can tell
    _table_update("DELETE FROM {table} WHERE seq > %s", [rows[-3].seq])
    AuditChainHead.objects.filter(pk=1).update(last_seq=rows[-3].seq, last_hash=rows[-3].hash)

    report = audit_chain_verify()
    assert not report.ok and report.checked == rows[-3].seq
    assert "head does not match its MAC" in report.problem
    # and the sealer refuses to extend it
    with pytest.raises(AuditChainError, match="MAC"):
        audit_chain_seal()


def test_a_chain_checked_with_another_key_is_reported_not_extended(actor, make_account):
    make_account("db1", "10.00")
    assert run_manage("verify_audit_chain", "--seal").returncode == 0

    result = run_manage("verify_audit_chain", AUDIT_CHAIN_KEY="another-key-than-the-one-that-sealed-it-0123")

    assert result.returncode == 1 and "AUDIT_CHAIN_KEY is not the key" in result.stderr
    assert audit_chain_status() is False
    assert run_manage("verify_audit_chain").returncode == 0  # with the right key it holds


# --- rotating the key -----------------------------------------------------------------------------

NEW_KEY = "the-new-audit-chain-key-0123456789abcdef0123456789"
NEWER_KEY = "the-newer-audit-chain-key-0123456789abcdef012345678"


def _fingerprint(key: str) -> str:
    return key_fingerprint(key.encode())


def test_the_key_is_rotated_without_rewriting_a_row_and_each_row_verifies_with_its_key(actor, make_account, settings):
    # given a chain sealed with the first key
    old_key = settings.AUDIT_CHAIN_KEY
    make_account("db1", "10.00")
    first = audit_chain_seal().sealed
    hashes = dict(AuditEvent.objects.values_list("id", "hash"))

    # when the operator sets a new key and retires the old one, sealing stops until the rotation
    settings.AUDIT_CHAIN_KEY, settings.AUDIT_CHAIN_RETIRED_KEYS = NEW_KEY, [old_key]
    make_account("db2", "20.00")
    with pytest.raises(AuditChainError, match="rotate_audit_chain_key"):
        audit_chain_seal()
    report = audit_chain_verify()
    assert not report.ok and report.checked == first and "retired key" in report.problem
    assert AuditEvent.objects.filter(seq__isnull=True).exists()

    # then the rotation verifies the chain and hands it over from the next row, rewriting nothing
    rotation = audit_chain_rotate_key()
    assert rotation.rotated and rotation.report.ok and rotation.report.checked == first
    assert (rotation.retired, rotation.current, rotation.from_seq) == (
        _fingerprint(old_key),
        _fingerprint(NEW_KEY),
        first + 1,
    )
    head = AuditChainHead.objects.get()
    assert head.key_epochs == [[1, _fingerprint(old_key)], [first + 1, _fingerprint(NEW_KEY)]]
    assert dict(AuditEvent.objects.filter(seq__lte=first).values_list("id", "hash")) == hashes
    second = audit_chain_seal().sealed
    assert second > 0 and audit_chain_verify().ok
    assert not audit_chain_rotate_key().rotated  # done already
    new_row = AuditEvent.objects.get(seq=first + 1)
    assert new_row.hash == audit_event_hash(new_row, seq=first + 1, prev_hash=new_row.prev_hash, key=NEW_KEY.encode())

    # and without the retired key the rows it sealed cannot be verified, and say so
    settings.AUDIT_CHAIN_RETIRED_KEYS = []
    report = audit_chain_verify()
    assert not report.ok and report.broken_seq == 1 and _fingerprint(old_key) in report.problem
    assert "AUDIT_CHAIN_RETIRED_KEYS" in report.problem

    # and a second rotation keeps both earlier keys' rows verifiable
    settings.AUDIT_CHAIN_KEY, settings.AUDIT_CHAIN_RETIRED_KEYS = NEWER_KEY, [old_key, NEW_KEY]
    assert audit_chain_rotate_key().rotated
    make_account("db1", "30.00")
    assert audit_chain_seal().sealed > 0
    report = audit_chain_verify()
    assert report.ok and report.checked == AuditEvent.objects.count()
    assert [fingerprint for _, fingerprint in AuditChainHead.objects.get().key_epochs] == [
        _fingerprint(old_key),
        _fingerprint(NEW_KEY),
        _fingerprint(NEWER_KEY),
    ]


def test_a_rotation_with_no_row_sealed_by_the_retired_key_leaves_no_empty_epoch(actor, make_account, settings):
    old_key = settings.AUDIT_CHAIN_KEY
    make_account("db1", "10.00")
    sealed = audit_chain_seal().sealed
    settings.AUDIT_CHAIN_KEY, settings.AUDIT_CHAIN_RETIRED_KEYS = NEW_KEY, [old_key]
    assert audit_chain_rotate_key().rotated
    # the new key is retired before it sealed a row
    settings.AUDIT_CHAIN_KEY, settings.AUDIT_CHAIN_RETIRED_KEYS = NEWER_KEY, [old_key, NEW_KEY]
    assert audit_chain_rotate_key().rotated
    assert AuditChainHead.objects.get().key_epochs == [
        [1, _fingerprint(old_key)],
        [sealed + 1, _fingerprint(NEWER_KEY)],
    ]
    # the head's MAC covers where each key begins, even past the last sealed row
    epochs = AuditChainHead.objects.get().key_epochs
    AuditChainHead.objects.filter(pk=1).update(key_epochs=[epochs[0], [sealed + 3, epochs[1][1]]])
    report = audit_chain_verify()
    assert not report.ok and report.checked == sealed and "head does not match its MAC" in report.problem
    AuditChainHead.objects.filter(pk=1).update(key_epochs=epochs)
    make_account("db2", "20.00")
    assert audit_chain_seal().sealed > 0 and audit_chain_verify().ok


def test_the_rotation_command_refuses_a_broken_chain_and_reports_a_good_one(actor, make_account, settings):
    old_key = settings.AUDIT_CHAIN_KEY
    make_account("db1", "10.00")
    make_account("db2", "20.00")
    sealed = audit_chain_seal().sealed
    rotate = {"AUDIT_CHAIN_KEY": NEW_KEY, "AUDIT_CHAIN_RETIRED_KEYS": old_key}

    # given a row changed behind the app's back: refused, nothing rotated, the sealer still stopped
    victim = AuditEvent.objects.get(seq=2)
    _table_update("UPDATE {table} SET actor_name = %s WHERE id = %s", ["somebody-else", victim.pk])
    result = run_manage("rotate_audit_chain_key", **rotate)
    assert result.returncode == 1
    assert f"audit event id {victim.pk} (#2) does not match its hash" in result.stderr
    assert "Nothing was rotated" in result.stderr
    assert AuditChainHead.objects.get().key_epochs == []
    assert run_manage("seal_audit_chain", **rotate).returncode == 1

    # given the row put back: rotated, with what it checked and what to keep
    _table_update("UPDATE {table} SET actor_name = %s WHERE id = %s", [victim.actor_name, victim.pk])
    result = run_manage("rotate_audit_chain_key", "--chunk-size", "2", **rotate)
    assert result.returncode == 0, result.stderr
    assert f"checked 2/{sealed}" in result.stdout and f"{sealed} events verified" in result.stdout
    assert f"Keep {_fingerprint(old_key)} in AUDIT_CHAIN_RETIRED_KEYS" in result.stdout
    assert run_manage("verify_audit_chain", **rotate).returncode == 0
    assert "nothing to do" in run_manage("rotate_audit_chain_key", **rotate).stdout
    # a process still on the old key refuses to extend the chain the new key now heads
    make_account("db1", "30.00")
    result = run_manage("seal_audit_chain")
    assert result.returncode == 1 and "MAC" in result.stderr


def test_a_leaked_retired_key_forges_neither_new_rows_nor_the_head(actor, make_account, settings):
    old_key = settings.AUDIT_CHAIN_KEY
    make_account("db1", "10.00")
    first = audit_chain_seal().sealed
    settings.AUDIT_CHAIN_KEY, settings.AUDIT_CHAIN_RETIRED_KEYS = NEW_KEY, [old_key]
    audit_chain_rotate_key()
    make_account("db2", "20.00")
    audit_chain_seal()
    assert audit_chain_verify().ok

    # given a row the new key sealed, changed and rechained by someone holding the retired key
    victim = AuditEvent.objects.get(seq=first + 1)
    assert victim.seq is not None
    _table_update("UPDATE {table} SET actor_name = %s WHERE id = %s", ["somebody-else", victim.pk])
    _rechain(victim.seq, key=old_key.encode())
    report = audit_chain_verify()
    assert not report.ok and report.broken_at == victim.pk and "changed after it was sealed" in report.problem

    # given the head moved back to claim the retired key sealed everything, its MAC remade with it:
    # the chain reads as sealed with a retired key, reported, and the sealer stops
    head = AuditChainHead.objects.get()
    AuditChainHead.objects.filter(pk=1).update(
        key_epochs=[], head_mac=_head_mac_with(head, key_epochs=[], key=old_key.encode())
    )
    report = audit_chain_verify()
    assert not report.ok and "retired key" in report.problem and "rewritten" in report.problem
    with pytest.raises(AuditChainError, match="retired key"):
        audit_chain_seal()

    # given the rotation point moved past the end (every row rechained with the retired key), the
    # head's MAC not remade with the new key it names: every row holds, the head does not
    last = AuditChainHead.objects.get().last_seq
    _rechain(1, key=old_key.encode())
    AuditChainHead.objects.filter(pk=1).update(
        key_epochs=[[1, _fingerprint(old_key)], [last + 1, _fingerprint(NEW_KEY)]]
    )
    report = audit_chain_verify()
    assert not report.ok and report.checked == last and "head does not match its MAC" in report.problem

    # given epochs that are not what a rotation writes: reported the same, not an error
    for junk in ("junk", [[1]], [["1", "x"]], [[2, _fingerprint(old_key)]], [[1, "a"], [1, "b"]]):
        AuditChainHead.objects.filter(pk=1).update(key_epochs=junk)
        report = audit_chain_verify()
        assert not report.ok, junk
        with pytest.raises(AuditChainError, match="MAC"):
            audit_chain_seal()


def _head_mac_with(head: AuditChainHead, *, key_epochs: list[Any], key: bytes) -> str:
    from audit.chain import _head_mac

    return _head_mac(last_seq=head.last_seq, last_hash=head.last_hash, key_epochs=key_epochs, key=key)


# --- rows the application did not write ----------------------------------------------------------


def _forge_event() -> int:
    """A row inserted behind the application's back, as someone with the database's password does
    it: a supervisor's approval that never happened, with no row MAC (who would compute it?)."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {AuditEvent._meta.db_table} (created_at, actor_name, channel, action, object_type, "
            "object_id, ledger, changes, request_id, row_mac, prev_hash, hash) "
            "VALUES (%s, 'supervisor', 'admin', 'approval.approved', 'approval', '1', '', '{}', '', '', '', '')",
            [connections["default"].ops.adapt_datetimefield_value(timezone.now())],
        )
        return int(cursor.lastrowid)


def test_a_row_inserted_behind_the_apps_back_is_reported_and_never_sealed(actor, make_account):
    make_account("db1", "10.00")
    forged = _forge_event()
    make_account("db2", "20.00")
    written = AuditEvent.objects.exclude(pk=forged).count()

    # verify reads only: the forged row is reported, nothing is sealed
    result = run_manage("verify_audit_chain")
    assert result.returncode == 1
    assert "do not match their row MAC" in result.stderr and f"id {forged}" in result.stderr
    assert not AuditEvent.objects.filter(seq__isnull=False).exists()
    assert audit_chain_status() is False

    # the sealer chains every row the application wrote, refuses the forged one and says so
    result = run_manage("seal_audit_chain")
    assert result.returncode == 1 and f"Sealed {written} audit events" in result.stdout
    assert "Refused 1 audit events whose row MAC is wrong" in result.stderr and str(forged) in result.stderr
    row = AuditEvent.objects.get(pk=forged)
    assert row.seq is None and row.hash == REFUSED
    assert audit_chain_seal().sealed == 0  # examined once
    report = audit_chain_verify()
    assert report.checked == written and report.forged == [forged] and not report.ok

    # a forged row given a MAC of a guessed key is refused the same way
    again = _forge_event()
    _table_update("UPDATE {table} SET row_mac = %s WHERE id = %s", ["0" * 64, again])
    assert audit_chain_seal().refused == [again]


def test_the_recovery_loop_seals_without_anyone_running_a_command(actor, make_account):
    """``make run`` has no Celery beat: the recovery loop beside the web server seals each pass."""
    import subprocess
    import sys
    import time

    from bankcore.testing.processes import subprocess_env

    make_account("db1", "10.00")
    loop = subprocess.Popen(
        [sys.executable, "manage.py", "recover_transfers", "--loop", "--interval", "0.2"],
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while AuditEvent.objects.filter(seq__isnull=True).exists():
            assert loop.poll() is None, loop.stderr.read() if loop.stderr else ""
            assert time.monotonic() < deadline, "the loop sealed nothing in 30 s"
            time.sleep(0.2)
    finally:
        loop.terminate()
        loop.wait(timeout=30)
    assert audit_chain_verify().ok


def test_rows_the_retired_key_wrote_are_sealed_by_the_rotation_and_later_ones_need_the_new_key(
    actor, make_account, settings
):
    old_key = settings.AUDIT_CHAIN_KEY
    make_account("db1", "10.00")
    audit_chain_seal()
    make_account("db2", "20.00")  # written with the old key, not sealed yet when the key changes
    settings.AUDIT_CHAIN_KEY, settings.AUDIT_CHAIN_RETIRED_KEYS = NEW_KEY, [old_key]

    rotation = audit_chain_rotate_key()

    assert rotation.rotated and not AuditEvent.objects.filter(seq__isnull=True).exists()
    assert rotation.from_seq == AuditEvent.objects.count() + 1 and audit_chain_verify().ok
    # a row given the retired key's MAC after the rotation (that key leaked) is refused
    forged = _forge_event()
    row = AuditEvent.objects.get(pk=forged)
    _table_update("UPDATE {table} SET row_mac = %s WHERE id = %s", [audit_event_mac(row, key=old_key.encode()), forged])
    assert audit_chain_seal().refused == [forged]
