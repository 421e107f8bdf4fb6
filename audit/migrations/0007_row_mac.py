"""Each audit row carries its own MAC (``row_mac``, written with it), and the append-only trigger
lets the sealer through for one more write: marking an unsealed row whose MAC is wrong as refused
(``hash`` = ``audit.chain.REFUSED``, ``seq`` left NULL), so that it is never chained. ``row_mac``
joins the columns no write may change. The head no longer records where keyed sealing began:
every chain is keyed from its first row.

MySQL 8.0 and MariaDB 10.11 share one syntax (see migration 0005 for the privileges it needs).
"""

from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

TABLE = "audit_auditevent"
SEAL_ONLY = "audit_auditevent_seal_only"
NO_DELETE = "audit_auditevent_no_delete"
DELETE_REFUSED = "audit events are append-only: never deleted"
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
    "row_mac",
)
REFUSED = "refused: its row MAC is wrong"
# No quote inside: the messages are spliced into the SQL as literals.
UPDATE_REFUSED = "audit events are append-only: only the sealer fills in the chain fields of an unsealed event, once"
OLD_CONTENT_COLUMNS = CONTENT_COLUMNS[:-1]


def _condition(same: str, columns: tuple[str, ...], *, refusal: bool) -> str:
    """The sealer's writes: chaining an unsealed event, or (``refusal``) marking it refused; every
    content column unchanged. ``same`` is the null-safe equality."""
    unchanged = " AND ".join(f"NEW.{column} {same} OLD.{column}" for column in columns)
    sealed = "NEW.seq IS NOT NULL AND NEW.prev_hash <> '' AND NEW.hash <> ''"
    if refusal:
        sealed = f"(({sealed} AND NEW.hash <> '{REFUSED}') OR (NEW.seq IS NULL AND NEW.prev_hash = '' AND NEW.hash = '{REFUSED}'))"
    return f"OLD.seq IS NULL AND OLD.prev_hash = '' AND OLD.hash = '' AND {sealed} AND {unchanged}"


def _create(vendor: str, columns: tuple[str, ...], *, refusal: bool) -> str:
    if vendor == "mysql":
        return (
            f"CREATE TRIGGER {SEAL_ONLY} BEFORE UPDATE ON {TABLE} FOR EACH ROW BEGIN "
            f"IF NOT ({_condition('<=>', columns, refusal=refusal)}) THEN "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{UPDATE_REFUSED}'; "
            "END IF; END"
        )
    if vendor == "sqlite":
        return (
            f"CREATE TRIGGER {SEAL_ONLY} BEFORE UPDATE ON {TABLE} WHEN NOT ({_condition('IS', columns, refusal=refusal)}) "
            f"BEGIN SELECT RAISE(ABORT, '{UPDATE_REFUSED}'); END"
        )
    raise NotImplementedError(f"append-only triggers for {vendor} are not written (bankcore runs on MySQL/MariaDB and SQLite)")


def _no_delete(vendor: str) -> str:
    # Created again: SQLite adds the column by rebuilding the table, which drops its triggers.
    if vendor == "mysql":
        return (
            f"CREATE TRIGGER {NO_DELETE} BEFORE DELETE ON {TABLE} FOR EACH ROW "
            f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{DELETE_REFUSED}'"
        )
    return f"CREATE TRIGGER {NO_DELETE} BEFORE DELETE ON {TABLE} BEGIN SELECT RAISE(ABORT, '{DELETE_REFUSED}'); END"


def _triggers_write(schema_editor: BaseDatabaseSchemaEditor, columns: tuple[str, ...], *, refusal: bool) -> None:
    vendor = schema_editor.connection.vendor
    for name in (SEAL_ONLY, NO_DELETE):
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}", params=None)
    schema_editor.execute(_create(vendor, columns, refusal=refusal), params=None)
    schema_editor.execute(_no_delete(vendor), params=None)


def trigger_replace(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _triggers_write(schema_editor, CONTENT_COLUMNS, refusal=True)


def trigger_restore(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _triggers_write(schema_editor, OLD_CONTENT_COLUMNS, refusal=False)


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0006_chain_key_epochs"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="row_mac",
            field=models.CharField(blank=True, default="", editable=False, max_length=64),
        ),
        migrations.RemoveField(
            model_name="auditchainhead",
            name="keyed_from",
        ),
        # atomic=False: on MySQL, DDL commits at once and cannot run inside a transaction.
        migrations.RunPython(trigger_replace, trigger_restore, atomic=False, elidable=False),
    ]
