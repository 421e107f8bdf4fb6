"""Least privilege: the application's database user, as ``migrate_ledgers`` leaves it, moves money
and writes and seals the audit trail, but cannot drop a trigger, alter or create a table, or change
or remove an entry or an audit row: the append-only triggers are not its to lift."""

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import DatabaseError, connections

from audit.chain import audit_chain_seal
from bankcore.testing.books import balances
from bankcore.testing.processes import run_manage
from bankcore.testing.servers import APP_PASSWORD, APP_USER, MIGRATE_PASSWORD, MIGRATE_USER
from transfers.models import Transfer
from transfers.services import transfer_create

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

REFUSED = [
    ("db1", "DROP TRIGGER accounts_entry_no_update"),
    ("db1", "ALTER TABLE accounts_entry ADD COLUMN forged INT"),
    ("db1", "DELETE FROM accounts_entry"),
    ("db1", "UPDATE accounts_entry SET amount = amount + 1"),
    ("db2", "DROP TABLE accounts_entry"),
    ("default", "DROP TRIGGER audit_auditevent_no_delete"),
    ("default", "UPDATE audit_auditevent SET actor_name = 'somebody-else'"),
    ("default", "DELETE FROM audit_auditevent"),
    ("default", "CREATE TABLE forged (id INT)"),
    ("default", "GRANT ALL PRIVILEGES ON *.* TO CURRENT_USER"),
]


@contextmanager
def _connected_as(user: str, password: str) -> Iterator[None]:
    """Every alias reconnected with other credentials for the block."""
    saved = {}
    for alias in connections:
        connection = connections[alias]
        connection.close()
        saved[alias] = (connection.settings_dict["USER"], connection.settings_dict["PASSWORD"])
        connection.settings_dict["USER"], connection.settings_dict["PASSWORD"] = user, password
    try:
        yield
    finally:
        for alias, (saved_user, saved_password) in saved.items():
            connections[alias].close()
            connections[alias].settings_dict["USER"], connections[alias].settings_dict["PASSWORD"] = (
                saved_user,
                saved_password,
            )


def test_the_applications_user_moves_money_but_cannot_lift_what_keeps_the_books(actor, make_account):
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    # given the databases migrated by the migrator, who grants the application's user its tables
    users = {f"DB{alias.removeprefix(settings.LEDGER_PREFIX)}_USER": APP_USER for alias in settings.LEDGERS}
    passwords = {name.replace("_USER", "_PASSWORD"): APP_PASSWORD for name in users}
    result = run_manage(
        "migrate_ledgers", DB_MIGRATE_USER=MIGRATE_USER, DB_MIGRATE_PASSWORD=MIGRATE_PASSWORD, **users, **passwords
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Granted {APP_USER} its privileges" in result.stdout

    with _connected_as(APP_USER, APP_PASSWORD):
        # then it moves money, in one ledger and across two, and seals the trail
        for destination in (bob, make_account("db1", "0.00")):
            transfer = transfer_create(
                actor=actor, source_account=alice.number, destination_account=destination.number, amount="10.00"
            )
            assert transfer.status == Transfer.Status.COMPLETED
        assert audit_chain_seal().sealed > 0
        # and is refused what would let it rewrite the books or the trail
        for alias, statement in REFUSED:
            with pytest.raises(DatabaseError, match="denied"), connections[alias].cursor() as cursor:
                cursor.execute(statement)

    assert balances(alice, bob) == [Decimal("80.00"), Decimal("10.00")]
