"""pytest plugin (registered by the root conftest.py) with the fixtures every app's tests share:
personas, account factories, the API's world, and the books check that runs after every test that
touches the ledgers. Plain functions the tests call live in the modules beside this one (books,
personas, processes, hostile)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings

from bankcore.actors import Actor, Channel
from bankcore.testing.books import number_of
from bankcore.testing.hostile import Tracebacks
from bankcore.testing.personas import STAFF_PASSWORD, api_client_for, api_user

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from accounts.models import Account
    from transfers.models import Transfer


@pytest.fixture
def actor() -> Actor:
    return Actor.system(Channel.COMMAND, "pytest")


@pytest.fixture
def ledgers() -> list[str]:
    return list(settings.LEDGERS)


@pytest.fixture
def make_account(actor: Actor) -> Callable[..., Account]:
    """Open an account in ``ledger`` with ``balance`` deposited; other fields as keywords."""
    from transfers.services import account_open_with_deposit

    def make(ledger: str = "db1", balance: str | Decimal = "0.00", **fields: Any) -> Account:
        amount = Decimal(balance)
        return account_open_with_deposit(
            actor=actor,
            ledger=ledger,
            holder=fields.pop("holder", f"Holder {ledger}"),
            opening_deposit=amount if amount > 0 else None,
            **fields,
        )

    return make


@pytest.fixture(autouse=True)
def books_balance(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that used the ledgers, the books must reconcile: each balance equals the
    sum of its entries, pending equals prepared legs, everything sums to zero, and the audit trail
    explains every customer account's state."""
    yield
    node = request.node
    if node.get_closest_marker("django_db") is None or node.get_closest_marker("books_may_not_balance"):
        return
    from transfers.reconciliation import reconcile

    # No grace: the test is over, so every account change it made has its audit event by now.
    report = reconcile(audit_grace=timedelta(0))
    assert report.ok, "\n".join(report.discrepancies)


# --- Partner API: the world its tests share -------------------------------------------------------


@pytest.fixture
def api_throttle_reset() -> Iterator[None]:
    """Throttle counts live in Redis across tests; start each API test with none."""
    from django.core.cache import cache

    delete_pattern = getattr(cache, "delete_pattern", None)
    if delete_pattern is not None:
        delete_pattern("throttle_*")
    else:
        cache.clear()
    yield


@pytest.fixture
def api_world(make_account: Callable[..., Account], api_throttle_reset: None) -> SimpleNamespace:
    """Two partners with an account in each ledger, an outsider's accounts, staff, and clients.

    ``a1``/``a2``: partner A's accounts in db1/db2 (1000.00 each); ``b1``: partner B's (500.00);
    ``c2``: nobody's (in db2, 0.00)."""
    a1 = make_account("db1", "1000.00", holder="Partner A one")
    a2 = make_account("db2", "1000.00", holder="Partner A two")
    b1 = make_account("db1", "500.00", holder="Partner B")
    c2 = make_account("db2", "0.00", holder="Outsider")
    partner_a = api_user("partner-a", links=(number_of(a1), number_of(a2)))
    partner_b = api_user("partner-b", links=(number_of(b1),))
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


# --- back office: staff and stuck transfers -----------------------------------------------------


@pytest.fixture
def make_staff() -> Callable[..., User]:
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


@pytest.fixture
def make_stuck_transfer() -> Callable[..., Transfer]:
    """A cross-ledger transfer left PENDING past its deadline with its debit prepared, as a crash
    between prepare and decide leaves it: recovery's work (it aborts it and voids the leg)."""
    from django.utils import timezone

    from transfers.engine.legs import leg_prepare
    from transfers.models import Transfer

    def make(source: Account, destination: Account, amount: str = "30.00") -> Transfer:
        transfer = Transfer.objects.create(
            source_account=number_of(source),
            source_ledger=source.ledger,
            destination_account=number_of(destination),
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


# --- the hostile-input corpora ---------------------------------------------------------------------


@pytest.fixture
def logged_tracebacks() -> Iterator[Tracebacks]:
    handler = Tracebacks()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)
