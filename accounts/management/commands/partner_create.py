"""Create a Partner API client; its generated password is printed once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.partners import partner_create, partner_link, partner_link_check
from bankcore.actors import Actor, Channel
from bankcore.errors import ApplicationError


class Command(BaseCommand):
    help = "Create a partner (a Partner API client): partner_create NAME [--link ACCOUNT ...]."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--link", nargs="+", default=[], metavar="ACCOUNT", help="accounts to link at once")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.system(Channel.COMMAND, "partner_create")
        try:
            if options["link"]:
                # Checked before the partner exists: a wrong number creates nothing.
                partner_link_check(options["link"])
            credential = partner_create(actor=actor, username=options["name"])
            if options["link"]:
                partner_link(actor=actor, username=credential.username, numbers=options["link"])
        except ApplicationError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from None
        self.stdout.write(self.style.SUCCESS(f"Partner {credential.username} created."))
        self.stdout.write(f"  username: {credential.username}")
        self.stdout.write(f"  password: {credential.password}")
        self.stdout.write("  (shown once: hand it over now; `partner_rotate` sets a new one)")
