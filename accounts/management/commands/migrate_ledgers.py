"""Bring every configured database up to date: the control plane, then each ledger.

With ``DB_MIGRATE_USER`` set, the migrations run as that user (the migrator: DDL, GRANT OPTION),
not as the application's, and each database's tables are then granted to the application's user
(its ``DB…_USER``) with exactly the DML it needs (``bankcore.privileges``)."""

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connections

from bankcore.privileges import app_privileges_grant


class Command(BaseCommand):
    help = (
        "Run migrate on `default` and on every ledger database (DB1, DB2, … however many are configured); "
        "with DB_MIGRATE_USER, as that user, then grant the application's user its privileges."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = options["verbosity"]
        aliases = ["default", *settings.LEDGERS]
        app_users = {alias: connections[alias].settings_dict.get("USER", "") for alias in aliases}
        migrator = settings.DB_MIGRATE_USER
        if migrator:
            for alias in aliases:
                _connect_as(alias, user=migrator, password=settings.DB_MIGRATE_PASSWORD)
        for alias in aliases:
            self.stdout.write(f"Migrating {alias}…")
            call_command("migrate", database=alias, interactive=False, verbosity=max(0, verbosity - 1))
        if migrator:
            for alias in aliases:
                if app_users[alias] == migrator:
                    continue  # one user for both: nothing to narrow
                grants = app_privileges_grant(using=alias, user=app_users[alias])
                if grants:
                    self.stdout.write(f"Granted {app_users[alias]} its privileges on {len(grants)} tables of {alias}.")
        self.stdout.write(self.style.SUCCESS(f"{1 + len(settings.LEDGERS)} databases up to date."))


def _connect_as(alias: str, *, user: str, password: str) -> None:
    """Point ``alias`` at other credentials from its next connection on (MySQL/MariaDB only)."""
    connection = connections[alias]
    if connection.vendor != "mysql":
        return
    connection.close()
    connection.settings_dict["USER"], connection.settings_dict["PASSWORD"] = user, password
