"""Fixtures shared by every app's tests: personas, account factories, and the books check that
runs after every test that touches the ledgers."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import traceback
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connections

from bankcore.actors import Actor, Channel


@pytest.fixture
def actor() -> Actor:
    return Actor.system(Channel.COMMAND, "pytest")


@pytest.fixture
def ledgers() -> list[str]:
    return list(settings.LEDGERS)


@pytest.fixture
def make_account(actor):  # type: ignore[no-untyped-def]
    from transfers.services import account_open_with_deposit

    def make(ledger: str = "db1", balance: str | Decimal = "0.00", **fields):  # type: ignore[no-untyped-def]
        amount = Decimal(balance)
        account = account_open_with_deposit(
            actor=actor,
            ledger=ledger,
            holder=fields.pop("holder", f"Holder {ledger}"),
            opening_deposit=amount if amount > 0 else None,
            **fields,
        )
        return account

    return make


def balances(*accounts) -> list[Decimal]:  # type: ignore[no-untyped-def]
    """Fresh posted balances of the given accounts, read from their ledgers."""
    from accounts.models import Account

    return [Account.objects.using(a.ledger).get(pk=a.pk).posted for a in accounts]


def held(*accounts) -> list[tuple[Decimal, Decimal]]:  # type: ignore[no-untyped-def]
    """Fresh (pending debits, pending credits) of the given accounts: what transfers hold."""
    from accounts.models import Account

    return [
        (fresh.pending_debits, fresh.pending_credits)
        for fresh in (Account.objects.using(a.ledger).get(pk=a.pk) for a in accounts)
    ]


NOTHING_HELD = (Decimal("0.00"), Decimal("0.00"))


@pytest.fixture(autouse=True)
def books_balance(request):  # type: ignore[no-untyped-def]
    """After every test that used the ledgers, the books must reconcile: each balance equals the
    sum of its entries, pending equals prepared legs, everything sums to zero, and the audit trail
    explains every customer account's state."""
    yield
    marker = request.node.get_closest_marker("django_db")
    if marker is None or request.node.get_closest_marker("books_may_not_balance"):
        return
    from transfers.reconciliation import reconcile

    # No grace: the test is over, so every account change it made has its audit event by now.
    report = reconcile(audit_grace=timedelta(0))
    assert report.ok, "\n".join(report.discrepancies)


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that must reach the *test* databases."""
    env = dict(os.environ)
    for alias in settings.LEDGERS:
        n = alias.removeprefix(settings.LEDGER_PREFIX)
        env[f"DB{n}_NAME"] = connections[alias].settings_dict["NAME"]
    env["DB_DEFAULT_NAME"] = connections["default"].settings_dict["NAME"]
    env["DJANGO_SETTINGS_MODULE"] = "bankcore.settings.test"
    env.update(extra)
    return env


def production_env(log_dir: object, **extra: str) -> dict[str, str]:
    """``subprocess_env`` for an app process on the production settings, with fresh secrets, served
    on loopback, logging under ``log_dir``."""
    production = {
        "DJANGO_SETTINGS_MODULE": "bankcore.settings.production",
        "SECRET_KEY": secrets.token_hex(32),
        "JWT_SECRET_KEY": secrets.token_hex(32),
        "AUDIT_CHAIN_KEY": secrets.token_hex(32),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_DIR": str(log_dir),
    }
    return subprocess_env(**{**production, **extra})


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        timeout=120,
    )


# --- Partner API: personas and clients ----------------------------------------------------------


def api_user(username: str, *, permissions: tuple[str, ...] = (), links: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """A user of the partner API: ``links`` are the account numbers it may see and debit,
    ``permissions`` ("app_label.codename") what staff may do."""
    from django.contrib.auth.models import Permission, User

    from accounts.models import PartnerAccountLink

    user = User.objects.create_user(username=username, password="pw-" + username)
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    for number in links:
        PartnerAccountLink.objects.create(user=user, account_number=number)
    return user


def api_client_for(user=None):  # type: ignore[no-untyped-def]
    """A DRF test client, authenticated with a real JWT access token when ``user`` is given."""
    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import RefreshToken

    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


@pytest.fixture
def api_throttle_reset():  # type: ignore[no-untyped-def]
    """Throttle counts live in Redis across tests; start each API test with none."""
    from django.core.cache import cache

    delete_pattern = getattr(cache, "delete_pattern", None)
    if delete_pattern is not None:
        delete_pattern("throttle_*")
    else:
        cache.clear()
    yield


@pytest.fixture
def api_world(make_account, api_throttle_reset):  # type: ignore[no-untyped-def]
    """Two partners with an account in each ledger, an outsider's accounts, staff, and clients.

    ``a1``/``a2``: partner A's accounts in db1/db2 (1000.00 each); ``b1``: partner B's (500.00);
    ``c2``: nobody's (in db2, 0.00)."""
    from types import SimpleNamespace

    a1 = make_account("db1", "1000.00", holder="Partner A one")
    a2 = make_account("db2", "1000.00", holder="Partner A two")
    b1 = make_account("db1", "500.00", holder="Partner B")
    c2 = make_account("db2", "0.00", holder="Outsider")
    partner_a = api_user("partner-a", links=(a1.number, a2.number))
    partner_b = api_user("partner-b", links=(b1.number,))
    staff = api_user(
        "staff",
        permissions=("accounts.view_account", "transfers.view_transfer", "transfers.add_transfer"),
    )
    return SimpleNamespace(
        a1=a1,
        a2=a2,
        b1=b1,
        c2=c2,
        partner_a=partner_a,
        partner_b=partner_b,
        staff=staff,
        a=api_client_for(partner_a),
        b=api_client_for(partner_b),
        s=api_client_for(staff),
        anon=api_client_for(None),
    )


# --- back office: personas and the "nothing moved" snapshot --------------------------------------

STAFF_PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def make_staff():  # type: ignore[no-untyped-def]
    """A staff user in one role group ("teller", "supervisor", "auditor"), or "outsider": staff
    with no role. The groups come from audit.roles (re-synced: transactional tests flush them)."""
    from django.contrib.auth.models import Group, User

    from audit.roles import roles_sync

    roles_sync()

    def make(role: str, username: str | None = None) -> User:
        user = User.objects.create_user(username or role, password=STAFF_PASSWORD, is_staff=True)
        if role != "outsider":
            user.groups.add(Group.objects.get(name=role))
        return user

    return make


def world_snapshot(*accounts):  # type: ignore[no-untyped-def]
    """Everything a refused back-office action must leave untouched: the accounts' balances and
    status, every ledger's entries and live legs, transfers, approvals and audit events (but the
    record of a refusal itself, ``<action>.refused``: audit.services.audit_refusal_record)."""
    from accounts.models import Account, Entry
    from audit.models import AuditEvent
    from transfers.models import Approval, Transfer, TransferLeg

    return {
        "accounts": [
            (a.posted, a.pending_debits, a.pending_credits, a.status)
            for a in (Account.objects.using(x.ledger).get(pk=x.pk) for x in accounts)
        ],
        "entries": sum(Entry.objects.using(ledger).count() for ledger in settings.LEDGERS),
        "legs": sum(
            TransferLeg.objects.using(ledger).exclude(state=TransferLeg.State.VOIDED).count()
            for ledger in settings.LEDGERS
        ),
        "transfers": Transfer.objects.count(),
        "approvals": list(Approval.objects.order_by("pk").values_list("pk", "status")),
        "audit_events": AuditEvent.objects.exclude(action__endswith=".refused").count(),
    }


@pytest.fixture
def make_stuck_transfer():  # type: ignore[no-untyped-def]
    """A cross-ledger transfer left PENDING past its deadline with its debit prepared, as a crash
    between prepare and decide leaves it: recovery's work (it aborts it and voids the leg)."""
    from datetime import timedelta

    from django.utils import timezone

    from transfers.engine.legs import leg_prepare
    from transfers.models import Transfer

    def make(source, destination, amount: str = "30.00"):  # type: ignore[no-untyped-def]
        transfer = Transfer.objects.create(
            source_account=source.number,
            source_ledger=source.ledger,
            destination_account=destination.number,
            destination_ledger=destination.ledger,
            amount=Decimal(amount),
            currency=source.currency,
            client_id="test",
            request_hash="x",
            business_date=timezone.localdate(),
            deadline=timezone.now() - timedelta(seconds=1),
            channel="system",
        )
        leg_prepare(transfer)
        return transfer

    return make


# --- the hostile-input corpora: tracebacks logged while a row runs ---------------------------------


class Tracebacks(logging.Handler):
    """The tracebacks logged while a hostile-input corpus runs (bankcore/tests/test_hostile_requests.py,
    transfers/tests/test_hostile_forms.py): a 500 logs its exception, and so does a failure
    swallowed on the way (the audit file's). Django's security loggers are left out: a
    SuspiciousOperation answered 400 is logged with its exception by design."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and not record.name.startswith("django.security"):
            self.seen.append("".join(traceback.format_exception(*record.exc_info)))


@pytest.fixture
def logged_tracebacks():  # type: ignore[no-untyped-def]
    handler = Tracebacks()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)
