"""Create demo accounts and users. Idempotent: running it again changes nothing, except that it
books the opening deposit of a demo account an interrupted run opened but did not fund."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Exists, OuterRef

from accounts.models import Account, Entry, PartnerAccountLink
from audit.roles import roles_sync
from bankcore.actors import Actor, Channel
from bankcore.env import env_optional
from bankcore.errors import ApplicationError
from bankcore.money import money_parse
from transfers.models import Transfer
from transfers.services import account_open_with_deposit, transfer_cash_movement

DEMO_USERS = ("teller", "supervisor", "auditor", "demo-partner")
# Back-office demo users, each in the group of its name (the roles: audit.roles).
STAFF_ROLES = ("teller", "supervisor", "auditor")
HOLDERS = ("Li Wei", "Wang Fang", "Zhang Min", "Liu Yang", "Chen Jing", "Yang Lei", "Zhao Li", "Huang Qiang")


class Command(BaseCommand):
    help = "Create funded demo accounts in every ledger and the demo users (teller, supervisor, auditor, demo-partner)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--accounts-per-ledger", type=int, default=4)
        parser.add_argument("--opening-balance", default="10000.00")

    def handle(self, *args: Any, **options: Any) -> None:
        per_ledger = options["accounts_per_ledger"]
        if per_ledger < 0 or per_ledger > 100_000:
            raise CommandError("--accounts-per-ledger must be between 0 and 100000")
        try:
            opening = money_parse(options["opening_balance"])
        except ApplicationError as exc:
            raise CommandError(f"--opening-balance: {exc.detail}") from None
        if opening > settings.MAX_TRANSFER_AMOUNT:
            # The deposit would be refused account after account; refuse before creating anything.
            raise CommandError(
                f"--opening-balance {opening} is above MAX_TRANSFER_AMOUNT ({settings.MAX_TRANSFER_AMOUNT}), "
                "the most one deposit may carry"
            )
        actor = Actor.system(Channel.COMMAND, "seed_demo")
        users = self._users()
        created = funded = 0
        for ledger in settings.LEDGERS:
            demo = Account.objects.using(ledger).filter(kind=Account.Kind.CUSTOMER, holder__startswith="Demo ")
            # An account is opened and funded in two commits; a run interrupted between them
            # leaves one that never had an entry. One spent down to zero has entries: left alone.
            for number in (
                demo.filter(status=Account.Status.ACTIVE, posted=0, pending_debits=0, pending_credits=0)
                .exclude(Exists(Entry.objects.using(ledger).filter(account=OuterRef("pk"))))
                .order_by("pk")
                .values_list("number", flat=True)
            ):
                transfer_cash_movement(
                    actor=actor,
                    kind=Transfer.Kind.DEPOSIT,
                    number=str(number),
                    amount=opening,
                    reference="Opening deposit",
                )
                funded += 1
            for index in range(demo.count(), per_ledger):
                holder = f"Demo {HOLDERS[index % len(HOLDERS)]} {ledger.upper()}-{index + 1:03d}"
                account_open_with_deposit(actor=actor, ledger=ledger, holder=holder, opening_deposit=opening)
                created += 1
                if created % 100 == 0:
                    self.stdout.write(f"  {created} accounts created…")
        partner = users["demo-partner"]
        for ledger in settings.LEDGERS:
            for number in (
                Account.objects.using(ledger).filter(holder__startswith="Demo ").values_list("number", flat=True)
            ):
                PartnerAccountLink.objects.get_or_create(user=partner, account_number=number)
        if funded:
            self.stdout.write(f"  {funded} demo accounts left unfunded by an interrupted run funded")
        self.stdout.write(self.style.SUCCESS(f"Demo data ready: {created} new accounts ({per_ledger} per ledger)."))

    def _users(self) -> dict[str, User]:
        User = get_user_model()
        password = env_optional("DEMO_PASSWORD")
        generated = password is None
        if generated:
            password = secrets.token_urlsafe(12)
        roles_sync()  # the groups exist after migrate; this also restores them after a flush
        users = {}
        for username in DEMO_USERS:
            user, was_created = User.objects.get_or_create(
                username=username, defaults={"is_staff": username != "demo-partner"}
            )
            if was_created:
                user.set_password(password)
                user.save()
                self.stdout.write(f"  user {username} / {password}")
            if username in STAFF_ROLES:
                if not user.is_staff:
                    user.is_staff = True
                    user.save(update_fields=["is_staff"])
                user.groups.add(Group.objects.get(name=username))
            users[username] = user
        if generated and any(User.objects.filter(username=u).exists() for u in DEMO_USERS):
            self.stdout.write(
                "  (passwords are printed once, when a user is created; set DEMO_PASSWORD to choose them)"
            )
        return users
