"""Django's ``flush``, able to empty the append-only tables too.

Their triggers refuse DELETE (audit/migrations/0005, accounts/migrations/0004), and DELETE is what
flush issues on MySQL when it is not asked to reset sequences — as after every transactional test
— and always on SQLite. MySQL: the tables that carry a DELETE trigger are emptied with TRUNCATE
first (DDL, which fires no trigger; the DELETE that follows finds nothing), every other table keeps
Django's cheaper DELETE; with sequences reset (``manage.py flush``) Django truncates every table
itself. SQLite (no TRUNCATE): the triggers are dropped and created again around the flush, in one
transaction. Everything else is Django's command.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands import flush
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper


def _guarded_tables_truncate(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS "
            "WHERE TRIGGER_SCHEMA = DATABASE() AND EVENT_MANIPULATION = 'DELETE'"
        )
        tables = [table for (table,) in cursor.fetchall()]
        if not tables:
            return
        cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
        try:
            for table in tables:
                cursor.execute(f"TRUNCATE TABLE {connection.ops.quote_name(table)}")
        finally:
            cursor.execute("SET FOREIGN_KEY_CHECKS = 1")


class Command(flush.Command):
    def handle(self, **options: Any) -> None:
        connection = connections[options["database"]]
        if connection.vendor == "mysql":
            # Before the question only when there is none to ask: the test suite's flush.
            if not options["interactive"] and not options.get("reset_sequences", True):
                _guarded_tables_truncate(connection)
            super().handle(**options)
        elif connection.vendor == "sqlite":
            with transaction.atomic(using=connection.alias):
                with connection.cursor() as cursor:
                    cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
                    triggers = cursor.fetchall()
                    for name, _sql in triggers:
                        cursor.execute(f"DROP TRIGGER {connection.ops.quote_name(name)}")
                super().handle(**options)
                with connection.cursor() as cursor:
                    for _name, sql in triggers:
                        cursor.execute(sql)
        else:
            super().handle(**options)
