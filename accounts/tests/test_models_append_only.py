"""Entries are immutable in the database itself: every ledger refuses to update or delete one,
whether through a queryset (which never calls ``Entry.save``/``delete``) or raw SQL, and the
embedded SQLite databases of ``make run`` refuse it too."""

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.db import DatabaseError, connections, transaction

from accounts.models import Entry

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@contextmanager
def _refused(ledger: str) -> Iterator[None]:
    with pytest.raises(DatabaseError, match="immutable"), transaction.atomic(using=ledger):
        yield


def _raw(ledger: str, sql: str, params: list[Any]) -> None:
    with connections[ledger].cursor() as cursor:
        cursor.execute(sql.format(table=Entry._meta.db_table), params)


@pytest.mark.ledgers3
def test_every_ledger_refuses_to_change_or_remove_an_entry(make_account, ledgers):
    for ledger in ledgers:
        account = make_account(ledger, "10.00")
        entry = Entry.objects.using(ledger).get(account=account)
        entries = Entry.objects.using(ledger)
        before = list(entries.order_by("id").values())

        with _refused(ledger):
            entries.filter(pk=entry.pk).update(amount=Decimal("99.00"))
        with _refused(ledger):
            entries.filter(pk=entry.pk).delete()
        with _refused(ledger):
            _raw(ledger, "UPDATE {table} SET balance_after = %s WHERE id = %s", [0, entry.pk])
        with _refused(ledger):
            _raw(ledger, "DELETE FROM {table}", [])

        assert list(entries.order_by("id").values()) == before


def test_the_embedded_sqlite_databases_refuse_it_too_and_still_flush(tmp_path):
    # given the embedded mode's databases, migrated as `make run` does
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB", "REDIS"))}
    env.update(DJANGO_SETTINGS_MODULE="bankcore.settings.development", BANKCORE_VAR_DIR=str(tmp_path))

    def manage(*args: str) -> None:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], env=env, cwd=settings.BASE_DIR, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr

    manage("migrate_ledgers", "-v", "0")
    ledger = sqlite3.connect(tmp_path / "ledger1.sqlite3")
    core = sqlite3.connect(tmp_path / "core.sqlite3")
    (cash,) = ledger.execute("SELECT id FROM accounts_account ORDER BY id LIMIT 1").fetchone()
    ledger.execute(
        "INSERT INTO accounts_entry (account_id, amount, balance_after, kind, transfer_id, description, created_at) "
        "VALUES (?, '1.00', '1.00', 'deposit', 'c0ffee00c0ffee00c0ffee00c0ffee00', '', '2026-01-01 00:00:00')",
        [cash],
    )
    core.execute(
        "INSERT INTO audit_auditevent (created_at, actor_name, channel, action, object_type, object_id, ledger, "
        "changes, request_id, row_mac, prev_hash, hash) "
        "VALUES ('2026-01-01 00:00:00', 'pytest', 'command', 'test.done', 'test', '1', '', '{}', '', '', '', '')"
    )

    # then entries can be neither changed nor removed, and audit events only sealed, once
    for statement in ("UPDATE accounts_entry SET amount = '2.00'", "DELETE FROM accounts_entry"):
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):
            ledger.execute(statement)
    core.execute("UPDATE audit_auditevent SET seq = 1, prev_hash = ?, hash = ?", ["0" * 64, "a" * 64])
    for statement in (
        "UPDATE audit_auditevent SET hash = 'b'",
        "UPDATE audit_auditevent SET actor_name = 'somebody-else'",
        "DELETE FROM audit_auditevent",
    ):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            core.execute(statement)
    ledger.commit()
    core.commit()

    # and a flush still empties them, the triggers left in place
    for alias in ("default", "db1"):
        manage("flush", "--no-input", "--database", alias)
    assert ledger.execute("SELECT COUNT(*) FROM accounts_entry").fetchone() == (0,)
    assert core.execute("SELECT COUNT(*) FROM audit_auditevent").fetchone() == (0,)
    for db, count in ((ledger, 2), (core, 2)):
        assert db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'").fetchone() == (count,)
