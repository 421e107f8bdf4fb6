"""Deactivate a partner (refused on its next request), or reactivate it with --activate."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.partners import partner_set_active
from bankcore.actors import Actor, Channel
from bankcore.errors import ApplicationError


class Command(BaseCommand):
    help = "Deactivate a partner: partner_deactivate NAME [--activate]."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--activate", action="store_true", help="reactivate instead")

    def handle(self, *args: Any, **options: Any) -> None:
        active = options["activate"]
        try:
            changed = partner_set_active(
                actor=Actor.system(Channel.COMMAND, "partner_deactivate"), username=options["name"], active=active
            )
        except ApplicationError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from None
        state = "active" if active else "deactivated"
        self.stdout.write(f"{options['name']} is {state}" + ("." if changed else " (it was already)."))
