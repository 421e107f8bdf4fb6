"""Create a back-office user in one role (teller, supervisor, auditor).

A superuser is not a teller: superusers administer users and groups and move no money
(``audit.roles``). The first staff of a deployment are made with this command.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.partners import staff_create
from audit.roles import ROLES
from bankcore.actors import Actor, Channel
from bankcore.errors import ApplicationError


class Command(BaseCommand):
    help = "Create a staff user in a role: create_staff USER --role teller|supervisor|auditor."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=sorted(ROLES))
        parser.add_argument("--email", default="")
        parser.add_argument(
            "--password-file",
            help="read the password from the first line of this file (else it is asked twice on the terminal)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        password = self._password(options["password_file"])
        try:
            user = staff_create(
                actor=Actor.system(Channel.COMMAND, "create_staff"),
                username=options["username"],
                role=options["role"],
                password=password,
                email=options["email"],
            )
        except ApplicationError as exc:
            raise CommandError(f"{exc.code}: {exc.detail}") from None
        self.stdout.write(self.style.SUCCESS(f"Staff user {user.username} created as {options['role']}."))

    def _password(self, path: str | None) -> str:
        if path:
            try:
                lines = Path(path).read_text().splitlines()
            except OSError as exc:
                raise CommandError(f"--password-file {path}: {exc.strerror}") from None
            if not lines or not lines[0]:
                raise CommandError(f"--password-file {path} is empty")
            return lines[0]
        if not sys.stdin.isatty():
            raise CommandError("no terminal to ask the password on: give --password-file")
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password (again): "):
            raise CommandError("the two passwords differ; nothing was created")
        return first
