"""The review is the server's, not the browser's: a back-office form that moves money or changes
an account is carried out only with the signed confirmation its review page carries — for this
user, this page and exactly this content, for a short time. Anything else shows the review page
again and does nothing."""

import time
from decimal import Decimal
from typing import Any

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse

from accounts.models import Account
from backoffice.review import CONFIRMATION_MAX_AGE, CONFIRMATION_SALT
from bankcore.actors import Actor, Channel
from bankcore.testing.backoffice import post_form, post_reviewed
from bankcore.testing.books import balances, world_snapshot
from transfers.approvals import approval_request
from transfers.models import Approval, Transfer
from transfers.services import transfer_create

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def token_of(response) -> str:
    token = response.context["confirmation"]
    assert token and f'name="confirmation" value="{token}"' in response.content.decode()
    return str(token)


@pytest.fixture
def counter(make_staff, make_account):
    """A teller at the counter, Alice (db1, 100.00) and Bob (db2, empty)."""
    return logged_in(make_staff("teller")), make_account("db1", "100.00"), make_account("db2", "0.00")


def test_a_form_posted_without_its_confirmation_shows_the_review_and_moves_nothing(counter, make_staff, actor):
    client, alice, bob = counter
    before = world_snapshot(alice, bob)
    transfer = {"source_account": alice.number, "destination_account": bob.number, "amount": "10.00"}
    posts = [
        (reverse("admin:transfers_transfer_add"), transfer),
        (reverse("admin:accounts_account_deposit", args=(bob.number,)), {"amount": "10.00"}),
        (reverse("admin:accounts_account_withdraw", args=(alice.number,)), {"amount": "10.00"}),
        (reverse("admin:accounts_account_add"), {"holder": "Never Opened", "currency": "CNY", "opening_deposit": "5"}),
    ]
    for url, fields in posts:
        response = post_form(client, url, fields)
        assert response.status_code == 200 and response.context["review"] is not None, url
        assert 'id="confirm"' in response.content.decode() and response.context["not_confirmed"] is None
    supervisor = logged_in(make_staff("supervisor"))
    paid = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="1.00")
    before = world_snapshot(alice, bob)
    for url, fields in (
        (reverse("admin:accounts_account_state", args=(alice.number, "freeze")), {"reason": "fraud check"}),
        (reverse("admin:transfers_transfer_reverse", args=(paid.pk,)), {"reference": "paid twice"}),
    ):
        response = post_form(supervisor, url, fields)
        assert response.status_code == 200 and response.context["review"] is not None, url
    assert world_snapshot(alice, bob) == before
    assert Transfer.objects.count() == 2 and not Account.objects.using("db1").filter(holder="Never Opened").exists()
    assert not Account.objects.using("db2").filter(holder="Never Opened").exists()


def test_a_confirmation_for_other_content_is_refused(counter):
    client, alice, bob = counter
    url = reverse("admin:accounts_account_withdraw", args=(alice.number,))
    token = token_of(post_form(client, url, {"amount": "1.00", "review": "Review"}))
    before = world_snapshot(alice, bob)

    # The same review's confirmation, sent with another amount, on another page, by another user.
    larger = post_form(client, url, {"amount": "90.00", "confirmation": token})
    other_page = post_form(
        client,
        reverse("admin:accounts_account_deposit", args=(alice.number,)),
        {"amount": "1.00", "confirmation": token},
    )

    for response in (larger, other_page):
        assert response.status_code == 200 and response.context["review"] is not None
        assert "was for something else" in response.content.decode()
    assert world_snapshot(alice, bob) == before and balances(alice) == [Decimal("100.00")]
    # What was reviewed is what is carried out.
    done = post_form(client, url, {"amount": "1.00", "confirmation": token})
    assert done.status_code == 302 and balances(alice) == [Decimal("99.00")]


def test_another_users_confirmation_is_refused(counter, make_staff):
    client, alice, bob = counter
    url = reverse("admin:accounts_account_deposit", args=(bob.number,))
    token = token_of(post_form(client, url, {"amount": "5.00", "review": "Review"}))
    other = logged_in(make_staff("teller", "teller2"))
    before = world_snapshot(alice, bob)

    response = post_form(other, url, {"amount": "5.00", "confirmation": token})

    assert response.status_code == 200 and "was for something else" in response.content.decode()
    assert world_snapshot(alice, bob) == before


def test_an_expired_or_forged_confirmation_is_refused(counter):
    client, alice, bob = counter
    url = reverse("admin:accounts_account_deposit", args=(bob.number,))
    fields = {"amount": "5.00"}
    token = token_of(post_form(client, url, {**fields, "review": "Review"}))
    before = world_snapshot(alice, bob)

    # Signed as the review page signs it, with this content, but too long ago.
    class Then(signing.TimestampSigner):
        def timestamp(self) -> str:
            return signing.b62_encode(int(time.time()) - CONFIRMATION_MAX_AGE - 60)

    payload = signing.loads(token, salt=CONFIRMATION_SALT)
    old = Then(salt=CONFIRMATION_SALT).sign_object(payload)
    expired = post_form(client, url, {**fields, "confirmation": old})
    forged = post_form(client, url, {**fields, "confirmation": token[:-3] + "xyz"})
    unsigned = post_form(client, url, {**fields, "confirmation": signing.dumps(payload, salt="another salt")})

    assert "This review had expired" in expired.content.decode()
    for response in (forged, unsigned):
        assert "could not be read" in response.content.decode()
    for response in (expired, forged, unsigned):
        assert response.status_code == 200 and response.context["review"] is not None
        assert response.context["confirmation"]  # a fresh one, to confirm after checking again
    assert world_snapshot(alice, bob) == before


def test_a_double_click_on_confirm_books_once(counter):
    client, alice, bob = counter
    url = reverse("admin:accounts_account_deposit", args=(bob.number,))
    fields = {"amount": "7.00", "idempotency_key": "a" * 32}
    token = token_of(post_form(client, url, {**fields, "review": "Review"}))

    first = post_form(client, url, {**fields, "confirmation": token})
    again = post_form(client, url, {**fields, "confirmation": token}, follow=True)

    assert first.status_code == 302 and again.status_code == 200
    assert balances(bob) == [Decimal("7.00")]
    assert Transfer.objects.filter(destination_account=bob.number).count() == 1
    assert any("nothing was done twice" in str(m) for m in again.context["messages"])


def test_opening_an_account_is_reviewed_first(counter):
    client, *_ = counter
    url = reverse("admin:accounts_account_add")
    fields = {"holder": "Review Opened", "currency": "CNY", "opening_deposit": "1,250.00"}

    review = post_form(client, url, {**fields, "review": "Review"})

    assert review.status_code == 200
    shown = dict(review.context["review"].rows)
    assert shown["Customer"] == "Review Opened" and shown["Currency"] == "CNY"
    assert shown["Cash paid in now"] == "1,250.00\u00a0CNY" and shown["Balance after"] == "1,250.00\u00a0CNY"
    assert shown["Ledger"].split()[0].isdigit()  # its code, no more
    done = post_reviewed(client, url, fields)
    assert done.status_code == 302
    [account] = [a for ledger in ("db1", "db2") for a in Account.objects.using(ledger).filter(holder="Review Opened")]
    assert balances(account) == [Decimal("1250.00")]


# --- the supervisor's decisions ----------------------------------------------------------------


@pytest.fixture
def queue(make_staff, make_account):
    """Two requests pending, each by its teller: Alice → Bob and Carol → Bob, 12,000.00 held on
    each; a supervisor to decide them."""
    alice, carol, bob = (
        make_account(ledger, amount) for ledger, amount in (("db1", "30000.00"), ("db1", "30000.00"), ("db2", "0.00"))
    )
    requests = [
        approval_request(
            actor=Actor.for_user(make_staff("teller", name), channel=Channel.ADMIN),
            kind=Approval.Kind.TRANSFER,
            amount="12000.00",
            source_account=source.number,
            destination_account=bob.number,
        )
        for name, source in (("teller", alice), ("teller2", carol))
    ]
    return logged_in(make_staff("supervisor")), requests, (alice, carol, bob)


def decide_url(approval: Approval) -> str:
    return reverse("admin:transfers_approval_decide", args=(approval.pk,))


def still_pending(*approvals: Approval) -> bool:
    return all(Approval.objects.get(pk=a.pk).status == Approval.Status.PENDING for a in approvals)


def test_a_decision_posted_without_its_confirmation_shows_it_and_changes_nothing(queue):
    supervisor, (first, second), accounts = queue
    maker = logged_in(first.maker)
    before = world_snapshot(*accounts)
    withdraw = reverse("admin:transfers_approval_withdraw", args=(first.pk,))
    bulk = reverse("admin:transfers_approval_bulk")
    posts: list[tuple[Client, str, dict[str, Any]]] = [
        (supervisor, decide_url(first), {"decision": "approve"}),
        (supervisor, decide_url(first), {"decision": "reject", "reason": "no papers"}),
        (supervisor, bulk, {"approval": [str(first.pk), str(second.pk)], "decision": "approve"}),
        (supervisor, bulk, {"approval": [str(first.pk)], "decision": "reject", "reason": "no papers"}),
        (maker, withdraw, {}),
    ]
    for client, url, fields in posts:
        response = post_form(client, url, fields)
        assert response.status_code == 200 and response.context["review"] is not None, (url, fields)
        assert 'id="confirm"' in response.content.decode() and response.context["not_confirmed"] is None

    assert world_snapshot(*accounts) == before and still_pending(first, second)
    # What approving does: the movement, the names and the balances it leaves.
    shown = post_form(supervisor, decide_url(first), {"decision": "approve"}).context["review"]
    rows = dict(shown.rows)
    assert shown.headline.startswith("Move 12,000.00\u00a0CNY from ") and rows["Amount"] == "12,000.00\u00a0CNY"
    assert [value for label, value in shown.rows if label.endswith("balance after")] == [
        "18,000.00\u00a0CNY",
        "12,000.00\u00a0CNY",
    ]
    listed = post_form(supervisor, bulk, {"approval": [str(first.pk), str(second.pk)], "decision": "approve"})
    assert dict(listed.context["review"].rows)["Total"] == "24,000.00\u00a0CNY"
    # A reject without its reason is refused before any confirmation.
    refused = post_form(supervisor, decide_url(first), {"decision": "reject", "reason": " "}, follow=True)
    assert "(approval_reason_required)" in refused.content.decode() and still_pending(first)


def test_another_approvals_confirmation_is_refused(queue):
    supervisor, (first, second), accounts = queue
    token = token_of(post_form(supervisor, decide_url(first), {"decision": "approve"}))
    bulk = reverse("admin:transfers_approval_bulk")
    one = {"approval": [str(first.pk)], "decision": "approve"}
    bulk_token = token_of(post_form(supervisor, bulk, one))
    before = world_snapshot(*accounts)

    # Another request's page, another decision, another list: each shows what it would do instead.
    other_request = post_form(supervisor, decide_url(second), {"decision": "approve", "confirmation": token})
    rejected = post_form(supervisor, decide_url(first), {"decision": "reject", "reason": "x", "confirmation": token})
    more = post_form(supervisor, bulk, {**one, "approval": [str(first.pk), str(second.pk)], "confirmation": bulk_token})

    for response in (other_request, rejected, more):
        assert response.status_code == 200 and "was for something else" in response.content.decode()
    assert world_snapshot(*accounts) == before and still_pending(first, second)


def test_a_double_click_on_confirm_decides_once(queue):
    supervisor, (first, second), (alice, carol, bob) = queue
    fields = {"decision": "approve"}
    token = token_of(post_form(supervisor, decide_url(first), fields))

    done = post_form(supervisor, decide_url(first), {**fields, "confirmation": token})
    again = post_form(supervisor, decide_url(first), {**fields, "confirmation": token}, follow=True)

    assert done.status_code == 302 and again.status_code == 200
    assert Approval.objects.get(pk=first.pk).status == Approval.Status.EXECUTED and still_pending(second)
    assert balances(alice, bob) == [Decimal("18000.00"), Decimal("12000.00")]
    assert Transfer.objects.filter(source_account=alice.number, status=Transfer.Status.COMPLETED).count() == 1
    assert "(approval_not_pending)" in again.content.decode()


def test_the_ticked_requests_are_decided_once_their_list_is_confirmed(queue):
    supervisor, (first, second), (alice, carol, bob) = queue
    bulk = reverse("admin:transfers_approval_bulk")

    done = post_reviewed(supervisor, bulk, {"approval": [str(first.pk), str(second.pk)], "decision": "approve"})

    assert done.status_code == 302
    assert {a.status for a in Approval.objects.all()} == {Approval.Status.EXECUTED}
    assert balances(alice, carol, bob) == [Decimal("18000.00"), Decimal("18000.00"), Decimal("24000.00")]
