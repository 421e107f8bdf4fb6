"""Bring every configured database up to date: the control plane, then each ledger."""

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run migrate on `default` and on every ledger database (DB1, DB2, … however many are configured)."

    def handle(self, *args, **options) -> None:  # type: ignore[no-untyped-def]
        verbosity = options["verbosity"]
        for alias in ["default", *settings.LEDGERS]:
            self.stdout.write(f"Migrating {alias}…")
            call_command("migrate", database=alias, interactive=False, verbosity=max(0, verbosity - 1))
        self.stdout.write(self.style.SUCCESS(f"{1 + len(settings.LEDGERS)} databases up to date."))
