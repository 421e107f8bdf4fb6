"""The database itself keeps the audit trail append-only (invariant 5), not only the app: triggers
refuse every DELETE of an audit event and every UPDATE except the sealer's one write
(``audit.chain``): filling in ``seq``, ``prev_hash`` and ``hash`` of an unsealed event (NULL, '',
'') with values, every other column unchanged. A sealed event is never written again.

MySQL 8.0 and MariaDB 10.11 share one syntax; with binary logging on, a user without SUPER may
create triggers only with ``log_bin_trust_function_creators=1`` (deploy/mysql/my.cnf). TRUNCATE
fires no trigger (flush: ``audit/management/commands/flush.py``). A column added to AuditEvent
later must be added to CONTENT_COLUMNS here (in a new migration), or the sealer's write could
change it unseen.
"""

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

TABLE = "audit_auditevent"
# Everything the sealer must leave as it is.
CONTENT_COLUMNS = (
    "id",
    "created_at",
    "actor_id",
    "actor_name",
    "channel",
    "action",
    "object_type",
    "object_id",
    "ledger",
    "changes",
    "ip",
    "request_id",
)
NO_DELETE = "audit_auditevent_no_delete"
SEAL_ONLY = "audit_auditevent_seal_only"
# No quote inside: the messages are spliced into the SQL as literals.
DELETE_REFUSED = "audit events are append-only: never deleted"
UPDATE_REFUSED = "audit events are append-only: only the sealer fills in the chain fields of an unsealed event, once"


def _seal_write(same: str) -> str:
    """The condition an UPDATE must meet: the sealer's write. ``same`` is the null-safe equality."""
    unchanged = " AND ".join(f"NEW.{column} {same} OLD.{column}" for column in CONTENT_COLUMNS)
    return (
        "OLD.seq IS NULL AND OLD.prev_hash = '' AND OLD.hash = '' "
        "AND NEW.seq IS NOT NULL AND NEW.prev_hash <> '' AND NEW.hash <> '' "
        f"AND {unchanged}"
    )


def _statements(vendor: str) -> list[str]:
    if vendor == "mysql":
        return [
            f"CREATE TRIGGER {NO_DELETE} BEFORE DELETE ON {TABLE} FOR EACH ROW "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{DELETE_REFUSED}'",
            f"CREATE TRIGGER {SEAL_ONLY} BEFORE UPDATE ON {TABLE} FOR EACH ROW BEGIN "
            f"IF NOT ({_seal_write('<=>')}) THEN "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{UPDATE_REFUSED}'; "
            "END IF; END",
        ]
    if vendor == "sqlite":
        return [
            f"CREATE TRIGGER {NO_DELETE} BEFORE DELETE ON {TABLE} BEGIN SELECT RAISE(ABORT, '{DELETE_REFUSED}'); END",
            f"CREATE TRIGGER {SEAL_ONLY} BEFORE UPDATE ON {TABLE} WHEN NOT ({_seal_write('IS')}) "
            f"BEGIN SELECT RAISE(ABORT, '{UPDATE_REFUSED}'); END",
        ]
    raise NotImplementedError(f"append-only triggers for {vendor} are not written (bankcore runs on MySQL/MariaDB and SQLite)")


def triggers_create(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    for statement in _statements(schema_editor.connection.vendor):
        schema_editor.execute(statement, params=None)


def triggers_drop(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    for name in (NO_DELETE, SEAL_ONLY):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}", params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0004_chain_key"),
    ]

    operations = [
        # atomic=False: on MySQL, DDL commits at once and cannot run inside a transaction.
        migrations.RunPython(triggers_create, triggers_drop, atomic=False, elidable=False),
    ]
