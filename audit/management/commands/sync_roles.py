"""Make the role groups say exactly what ``audit.roles`` says (after a change there)."""

from typing import Any

from django.core.management.base import BaseCommand

from audit.roles import ROLES, roles_sync


class Command(BaseCommand):
    help = "Create or update the teller, supervisor and auditor groups and their permissions."

    def handle(self, *args: Any, **options: Any) -> None:
        roles_sync()
        self.stdout.write(self.style.SUCCESS(f"Roles in sync: {', '.join(ROLES)}."))
