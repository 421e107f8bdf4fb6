"""Give a partner a new generated password (printed once); tokens under the old one stop working."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.partners import partner_rotate_password
from bankcore.actors import Actor, Channel
from bankcore.errors import ApplicationError


class Command(BaseCommand):
    help = "Rotate a partner's API password: partner_rotate NAME."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            credential = partner_rotate_password(
                actor=Actor.system(Channel.COMMAND, "partner_rotate"), username=options["name"]
            )
        except ApplicationError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from None
        self.stdout.write(self.style.SUCCESS(f"New password for {credential.username} (shown once):"))
        self.stdout.write(f"  password: {credential.password}")
