"""Link accounts to a partner (or unlink them with --remove)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.partners import partner_link, partner_unlink
from bankcore.actors import Actor, Channel
from bankcore.errors import ApplicationError


class Command(BaseCommand):
    help = "Let a partner see and debit accounts: partner_link NAME ACCOUNT [ACCOUNT ...] [--remove]."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("accounts", nargs="+", metavar="ACCOUNT")
        parser.add_argument("--remove", action="store_true", help="remove these links instead")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.system(Channel.COMMAND, "partner_link")
        try:
            if options["remove"]:
                changed = partner_unlink(actor=actor, username=options["name"], numbers=options["accounts"])
                verb = "unlinked"
            else:
                changed = partner_link(actor=actor, username=options["name"], numbers=options["accounts"])
                verb = "linked"
        except ApplicationError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from None
        unchanged = len(options["accounts"]) - len(changed)
        self.stdout.write(
            self.style.SUCCESS(f"{options['name']}: {len(changed)} account(s) {verb}")
            + (f", {unchanged} unchanged" if unchanged else "")
            + "."
        )
