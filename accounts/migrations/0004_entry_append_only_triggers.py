"""The database itself keeps entries immutable (invariant 5), not only the app: triggers in every
ledger refuse any UPDATE or DELETE of ``accounts_entry``. A correction is a new entry (a
reversal), never an edited one.

Runs in every ledger database and nowhere else (``hints={"target": "ledger"}``, see
``bankcore.router``). MySQL 8.0 and MariaDB 10.11 share one syntax; with binary logging on, a user
without SUPER may create triggers only with ``log_bin_trust_function_creators=1``
(deploy/mysql/my.cnf). TRUNCATE fires no trigger (flush: ``audit/management/commands/flush.py``).
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

TABLE = "accounts_entry"
NO_UPDATE = "accounts_entry_no_update"
NO_DELETE = "accounts_entry_no_delete"
REFUSED = "entries are immutable: never updated or deleted"


def _statements(vendor: str) -> list[str]:
    if vendor == "mysql":
        return [
            f"CREATE TRIGGER {name} BEFORE {event} ON {TABLE} FOR EACH ROW "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{REFUSED}'"
            for name, event in ((NO_UPDATE, "UPDATE"), (NO_DELETE, "DELETE"))
        ]
    if vendor == "sqlite":
        return [
            f"CREATE TRIGGER {name} BEFORE {event} ON {TABLE} BEGIN SELECT RAISE(ABORT, '{REFUSED}'); END"
            for name, event in ((NO_UPDATE, "UPDATE"), (NO_DELETE, "DELETE"))
        ]
    raise NotImplementedError(f"append-only triggers for {vendor} are not written (bankcore runs on MySQL/MariaDB and SQLite)")


def triggers_create(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    for statement in _statements(schema_editor.connection.vendor):
        schema_editor.execute(statement, params=None)


def triggers_drop(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    for name in (NO_UPDATE, NO_DELETE):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}", params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_account_permissions"),
    ]

    operations = [
        # atomic=False: on MySQL, DDL commits at once and cannot run inside a transaction.
        migrations.RunPython(
            triggers_create, triggers_drop, hints={"target": "ledger"}, atomic=False, elidable=False
        ),
    ]
