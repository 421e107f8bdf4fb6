"""Four eyes by total, not by slip, through the back office's forms: what one maker moves from one
account in a business day, and over all accounts, pending requests included, and a supervisor's
own movements above SOLO_LIMIT."""

import threading
import uuid
from decimal import Decimal

import pytest
from django.db import connections
from django.test import Client
from django.urls import reverse

from bankcore.actors import Actor, Channel
from bankcore.testing.backoffice import post_reviewed
from bankcore.testing.books import balances, world_snapshot
from transfers.approvals import money_movement_submit
from transfers.models import Approval, Transfer

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def send(client, source, destination, amount, key=None):
    """The "New transfer" form, as a teller confirms it (a fresh key unless one is given)."""
    return post_reviewed(
        client,
        reverse("admin:transfers_transfer_add"),
        {
            "source_account": source.number,
            "destination_account": destination.number,
            "amount": amount,
            "idempotency_key": key or uuid.uuid4().hex,
        },
        follow=True,
    )


def warnings_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"] if m.level_tag == "warning"]


def only_held(before, after, *, held: dict[int, str]) -> None:
    """A request that waits moves nothing: no entry, no posted balance changed; its amount is held
    (pending debits) on the account it leaves, by one transfer of its own (the hold)."""
    assert after["entries"] == before["entries"]
    expected = [
        (posted, debits + Decimal(held.get(i, "0.00")), credits, status)
        for i, (posted, debits, credits, status) in enumerate(before["accounts"])
    ]
    assert after["accounts"] == expected
    assert after["transfers"] == before["transfers"] + len(held)


def test_two_slips_from_one_account_wait_as_one_would(make_staff, make_account):
    teller = logged_in(make_staff("teller"))
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")

    send(teller, alice, bob, "9000.00")
    assert balances(alice, bob) == [Decimal("21000.00"), Decimal("9000.00")]
    before = world_snapshot(alice, bob)
    second = send(teller, alice, bob, "9000.00")

    [waits] = warnings_of(second)
    assert "waits for a supervisor" in waits and "APPROVAL_THRESHOLD" in waits
    only_held(before, world_snapshot(alice, bob), held={0: "9000.00"})
    assert Approval.objects.get().status == Approval.Status.PENDING


def test_a_pending_request_counts_toward_the_total(make_staff, make_account):
    teller = logged_in(make_staff("teller"))
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    send(teller, alice, bob, "12000.00")  # waits
    before = world_snapshot(alice, bob)

    small = send(teller, alice, bob, "1.00")

    assert warnings_of(small) and Approval.objects.filter(status=Approval.Status.PENDING).count() == 2
    only_held(before, world_snapshot(alice, bob), held={0: "1.00"})


def test_one_makers_day_over_all_accounts_has_its_own_threshold(make_staff, make_account, settings):
    settings.APPROVAL_MAKER_DAILY_THRESHOLD = Decimal("15000.00")
    teller = logged_in(make_staff("teller"))
    other_teller = logged_in(make_staff("teller", "teller2"))
    alice, carol, bob = make_account("db1", "30000.00"), make_account("db1", "30000.00"), make_account("db2")

    send(teller, alice, bob, "8000.00")
    before = world_snapshot(alice, carol, bob)
    second = send(teller, carol, bob, "8000.00")  # another account, under the threshold alone

    [waits] = warnings_of(second)
    assert "APPROVAL_MAKER_DAILY_THRESHOLD" in waits
    only_held(before, world_snapshot(alice, carol, bob), held={1: "8000.00"})
    # Another maker's day is their own (carol's 8,000.00 still held for the first maker's request).
    send(other_teller, carol, bob, "8000.00")
    assert balances(alice, carol, bob) == [Decimal("22000.00"), Decimal("22000.00"), Decimal("16000.00")]


def test_a_supervisor_above_solo_limit_needs_a_second_supervisor(make_staff, make_account):
    maker = make_staff("supervisor")
    checker = make_staff("supervisor", "supervisor2")
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    before = world_snapshot(alice, bob)

    made = send(logged_in(maker), alice, bob, "15000.00")

    [waits] = warnings_of(made)
    assert "SOLO_LIMIT" in waits
    only_held(before, world_snapshot(alice, bob), held={0: "15000.00"})
    approval = Approval.objects.get()
    decide = reverse("admin:transfers_approval_decide", args=(approval.pk,))
    assert post_reviewed(logged_in(maker), decide, {"decision": "approve"}).status_code == 302
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING  # the maker's own approval was refused
    post_reviewed(logged_in(checker), decide, {"decision": "approve"})
    approval.refresh_from_db()
    assert approval.status == Approval.Status.EXECUTED and approval.checker_id == checker.pk
    assert balances(alice, bob) == [Decimal("15000.00"), Decimal("15000.00")]


def test_a_form_sent_again_takes_the_way_it_took_the_first_time(make_staff, make_account):
    teller = logged_in(make_staff("teller"))
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")

    send(teller, alice, bob, "9000.00", key="form-1")
    again = send(teller, alice, bob, "9000.00", key="form-1")  # the total now includes it

    assert not warnings_of(again) and not Approval.objects.exists()
    assert Transfer.objects.filter(amount=Decimal("9000.00")).count() == 1
    assert balances(alice, bob) == [Decimal("21000.00"), Decimal("9000.00")]


def test_two_slips_sent_at_once_do_not_both_pass(make_staff, make_account):
    teller = make_staff("teller")
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def submit() -> None:
        try:
            barrier.wait(timeout=10)
            outcome = money_movement_submit(
                actor=Actor.for_user(teller, channel=Channel.ADMIN),
                user=teller,
                kind=Approval.Kind.TRANSFER,
                amount="9000.00",
                source_account=alice.number,
                destination_account=bob.number,
            )
            outcomes.append(type(outcome).__name__)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == ["Approval", "Transfer"]
    assert balances(alice, bob) == [Decimal("21000.00"), Decimal("9000.00")]
