"""Least privilege in the database: the application's user holds, table by table, the DML it needs
and nothing else — no DDL, no TRIGGER, no GRANT, and neither UPDATE nor DELETE on what is
append-only (entries; audit rows, but for the sealer's chain columns). The migrator's user
(``DB_MIGRATE_USER``: DDL, with GRANT OPTION on the databases) runs the migrations and then grants
these, every time (``manage.py migrate_ledgers``), so a table a migration adds gets its grant and a
narrowed one loses what it no longer needs. MySQL/MariaDB only: SQLite has no users.

The policy names tables, not models: it is the deployment's, and the ground floor imports no app.
"""

from __future__ import annotations

from django.db import DatabaseError, connections
from django.db.backends.utils import CursorWrapper

FULL = ("SELECT", "INSERT", "UPDATE", "DELETE")
# Every table the application writes in a narrower way than full DML; any other (Django's own
# sessions, auth and admin tables, django-celery-beat's, simplejwt's) gets FULL.
NARROWER: dict[str, tuple[str, ...]] = {
    # Append-only: written once, never changed or removed (triggers refuse it too).
    "accounts_entry": ("SELECT", "INSERT"),
    "audit_auditevent": ("SELECT", "INSERT", "UPDATE (`seq`, `prev_hash`, `hash`)"),
    "auditlog_logentry": ("SELECT", "INSERT"),
    "django_admin_log": ("SELECT", "INSERT"),
    "transfers_reconciliationrun": ("SELECT", "INSERT"),
    # Changed in place by conditional updates, never removed.
    "accounts_account": ("SELECT", "INSERT", "UPDATE"),
    "transfers_transferleg": ("SELECT", "INSERT", "UPDATE"),
    "transfers_transfer": ("SELECT", "INSERT", "UPDATE"),
    "transfers_approval": ("SELECT", "INSERT", "UPDATE"),
    "audit_auditchainhead": ("SELECT", "INSERT", "UPDATE"),
    # Django's record of the schema: read when the app starts, written by the migrator only.
    "django_migrations": ("SELECT",),
}
# The grant or revoke names nothing the user holds (1141: on the database, 1147: on the table).
_NO_SUCH_GRANT = (1141, 1147)


def app_privileges(table: str) -> tuple[str, ...]:
    """What the application's user may do on ``table``."""
    return NARROWER.get(table, FULL)


def app_privileges_grant(*, using: str, user: str, host: str = "%") -> list[str]:
    """Make ``user``@``host`` (the application's) hold exactly ``app_privileges`` on every table of
    ``using``'s database: whatever it held on the database as a whole or on a table is revoked
    first. Run as a user with GRANT OPTION on the database (the migrator). Returns the grants made;
    nothing on SQLite."""
    connection = connections[using]
    if connection.vendor != "mysql":
        return []
    quote = connection.ops.quote_name
    database = quote(connection.settings_dict["NAME"])
    grants: list[str] = []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME"
        )
        tables = [name for (name,) in cursor.fetchall()]
        for target in [f"{database}.*", *(f"{database}.{quote(table)}" for table in tables)]:
            for what in ("ALL PRIVILEGES", "GRANT OPTION"):
                _revoke(cursor, f"REVOKE {what} ON {target} FROM %s@%s", [user, host])
        for table in tables:
            target = f"{database}.{quote(table)}"
            statement = f"GRANT {', '.join(app_privileges(table))} ON {target} TO %s@%s"
            cursor.execute(statement, [user, host])
            grants.append(f"{', '.join(app_privileges(table))} ON {target}")
    return grants


def _revoke(cursor: CursorWrapper, statement: str, params: list[str]) -> None:
    try:
        cursor.execute(statement, params)
    except DatabaseError as exc:
        if not exc.args or exc.args[0] not in _NO_SUCH_GRANT:
            raise
