"""Fixtures shared by every app's tests: personas, account factories, and the books check that
runs after every test that touches the ledgers."""

from __future__ import annotations

import os
import subprocess
import sys
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
    from accounts.services import account_open

    def make(ledger: str = "db1", balance: str | Decimal = "0.00", **fields):  # type: ignore[no-untyped-def]
        amount = Decimal(balance)
        account = account_open(
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


@pytest.fixture(autouse=True)
def books_balance(request):  # type: ignore[no-untyped-def]
    """After every test that used the ledgers, the books must reconcile: each balance equals the
    sum of its entries, pending equals prepared legs, everything sums to zero."""
    yield
    marker = request.node.get_closest_marker("django_db")
    if marker is None or request.node.get_closest_marker("books_may_not_balance"):
        return
    from transfers.reconciliation import reconcile

    report = reconcile()
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


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        timeout=120,
    )
