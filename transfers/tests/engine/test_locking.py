"""An account locked by someone else for longer than the engine will wait: the transfer gives up
cleanly (ABORTED, `ledger_busy`, nothing held, nothing moved), at the service and through the API."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from django.db import connections, transaction

from accounts.models import Account, Entry
from bankcore import db
from bankcore.actors import Actor, Channel
from transfers.errors import LedgerBusy
from transfers.models import Transfer, TransferLeg
from transfers.services import transfer_create

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@contextmanager
def row_locked(account: Account) -> Iterator[None]:
    """Hold ``FOR UPDATE`` on the account from another connection (another thread) until exit."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic(using=account.ledger):
                Account.objects.using(account.ledger).select_for_update().get(pk=account.pk)
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    try:
        yield
    finally:
        release.set()
        holder.join(10)


@pytest.fixture
def impatient_engine(monkeypatch):
    """Lock waits of 1 s and two attempts, instead of the configured timeout and six."""
    monkeypatch.setitem(db.atomic_with_retry.__kwdefaults__, "attempts", 2)
    for alias in connections:
        if connections[alias].vendor == "mysql":
            with connections[alias].cursor() as cursor:
                cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
    yield
    for alias in connections:
        connections[alias].close()  # the next test gets the configured session again


def world(*accounts: Account) -> tuple[list[tuple[Decimal, Decimal, Decimal]], list[int], list[int]]:
    return (
        [
            (a.posted, a.pending_debits, a.pending_credits)
            for a in (Account.objects.using(x.ledger).get(pk=x.pk) for x in accounts)
        ],
        [Entry.objects.using(x.ledger).count() for x in accounts],
        [TransferLeg.objects.using(x.ledger).exclude(state="voided").count() for x in accounts],
    )


@pytest.mark.parametrize("locked_side", ["source", "destination"])
def test_a_locked_account_makes_the_transfer_give_up_cleanly(make_account, impatient_engine, locked_side):
    source = make_account("db1", "100.00")
    destination = make_account("db2", "0.00")
    before = world(source, destination)

    with row_locked(source if locked_side == "source" else destination):
        with pytest.raises(LedgerBusy) as refused:
            transfer_create(
                actor=Actor.system(Channel.COMMAND, "test"),
                source_account=source.number,
                destination_account=destination.number,
                amount="10.00",
                idempotency_key=f"busy-{locked_side}",
            )

    transfer = Transfer.objects.get(idempotency_key=f"busy-{locked_side}")
    assert (transfer.status, transfer.failure_code) == ("aborted", "ledger_busy")
    assert refused.value.extra["transfer_id"] == str(transfer.id)
    assert world(source, destination) == before


def test_the_api_answers_503_ledger_busy_and_moves_nothing_then_the_retry_is_made_once(api_world, impatient_engine):
    before = world(api_world.a1, api_world.c2)
    body = {"source_account": api_world.a1.number, "destination_account": api_world.c2.number, "amount": "5.00"}
    key = uuid.uuid4().hex

    with row_locked(api_world.a1):
        response = api_world.a.post("/api/v1/transfers/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "ledger_busy"
    assert response["Retry-After"]
    assert world(api_world.a1, api_world.c2) == before

    # A busy account is not an answer to the request: retried under its key, it is made, once.
    retried = api_world.a.post("/api/v1/transfers/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert retried.status_code == 201, retried.content
    again = api_world.a.post("/api/v1/transfers/", body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert (again.status_code, again["Idempotent-Replayed"]) == (201, "true")
    assert again.json()["id"] == retried.json()["id"]
    [(a1_posted, _, _), (c2_posted, _, _)] = before[0]
    after = world(api_world.a1, api_world.c2)
    assert after[0] == [(a1_posted - 5, 0, 0), (c2_posted + 5, 0, 0)]
