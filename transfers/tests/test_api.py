"""Partner API: transfers — create, replay, conflict, refusals (nothing moved), personas, four eyes
and roles at this door, reversal, list filters and pagination."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from accounts.models import Entry
from accounts.numbers import account_number_make
from bankcore.testing.books import balances, world_snapshot
from bankcore.testing.personas import api_client_for, api_user
from transfers.models import Approval, Transfer

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

URL = "/api/v1/transfers/"
PROBLEM = "application/problem+json"


def post(client, body, key="k-1", **extra):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(URL, body, format="json", **headers, **extra)


def body(src, dst, amount="125.50", **extra):
    return {"source_account": src.number, "destination_account": dst.number, "amount": amount, **extra}


def entry_count() -> int:
    from django.conf import settings

    return sum(Entry.objects.using(alias).count() for alias in settings.LEDGERS)


def assert_nothing_moved(w, before_balances, before_entries):
    assert balances(w.a1, w.a2, w.b1, w.c2) == before_balances
    assert entry_count() == before_entries


def snapshot(w):
    return balances(w.a1, w.a2, w.b1, w.c2), entry_count()


def everything(w, *more):
    """world_snapshot of the world's accounts (and ``more``): balances, pending and status, entries,
    live legs, transfers, approvals and audit events."""
    return world_snapshot(w.a1, w.a2, w.b1, w.c2, *more)


def assert_refused_and_recorded(response, before, after, *, status, code):
    """A refusal found once the transfer was accepted: the problem names the transfer it was
    recorded on, now ABORTED with that code; no balance, pending amount, entry or live leg changed,
    and that transfer (with its audit events) is the only thing added."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    problem = response.json()
    assert problem["code"] == code and problem["type"].endswith(code), problem
    transfer = Transfer.objects.get(pk=problem["transfer_id"])
    assert (transfer.status, transfer.failure_code) == ("aborted", code)
    assert {k: v for k, v in after.items() if k not in ("transfers", "audit_events")} == {
        k: v for k, v in before.items() if k not in ("transfers", "audit_events")
    }
    assert after["transfers"] == before["transfers"] + 1


def missing_account_number(account) -> str:
    """A well-formed number of ``account``'s ledger that no account has."""
    return account_number_make(ledger_code=account.number[:2], serial=10**10 - 1)


# --- success ---------------------------------------------------------------------------------------


def test_partner_moves_money_across_ledgers(api_world):
    w = api_world
    response = post(w.a, body(w.a1, w.c2, currency="CNY", reference="Invoice 42"))
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["status"] == "completed"
    assert data["amount"] == "125.50"
    assert data["currency"] == "CNY"
    assert data["reference"] == "Invoice 42"
    assert data["source_account"] == w.a1.number
    assert data["destination_account"] == w.c2.number
    assert response["Location"] == f"/api/v1/transfers/{data['id']}/"
    assert "Idempotent-Replayed" not in response
    assert balances(w.a1, w.c2) == [Decimal("874.50"), Decimal("125.50")]
    transfer = Transfer.objects.get(pk=data["id"])
    assert transfer.client_id == f"user:{w.partner_a.pk}"
    assert transfer.channel == "api"
    assert transfer.created_by_id == w.partner_a.pk


def test_partner_moves_money_inside_one_ledger(api_world):
    w = api_world
    response = post(w.a, body(w.a1, w.b1, amount="1"))
    assert response.status_code == 201
    assert response.json()["amount"] == "1.00"
    assert balances(w.a1, w.b1) == [Decimal("999.00"), Decimal("501.00")]


# --- four eyes and roles: staff have no door here; the back office is theirs ------------------------


@pytest.mark.parametrize("who", ["teller", "supervisor", "superuser", "by-permission", "reverser"])
def test_staff_move_and_read_nothing_through_the_api(api_world, make_staff, who):
    """Above the threshold or not, a token minted for staff opens nothing: four eyes and the roles
    live in the back office, and the API is no second door around them."""
    from django.contrib.auth.models import User

    w = api_world
    transfer_id = post(w.a, body(w.a1, w.b1, amount="10.00"), key="paid").json()["id"]
    users = {
        "superuser": lambda: User.objects.create_superuser("root", password="root-password-123"),
        "by-permission": lambda: w.staff,  # not flagged is_staff, but debits any account by permission
        "reverser": lambda: api_user("reverser", permissions=("transfers.reverse_transfer",)),
    }
    client = api_client_for(users.get(who, lambda: make_staff(who))())
    before = world_snapshot(w.a1, w.a2, w.b1, w.c2)
    for response in (
        post(client, body(w.b1, w.c2, amount="10.00"), key="small"),
        post(client, body(w.b1, w.c2, amount="10000.01"), key="large"),
        client.post(f"{URL}{transfer_id}/reverse/", {}, format="json", HTTP_IDEMPOTENCY_KEY="r"),
        client.get(f"{URL}{transfer_id}/"),
        client.get(URL),
    ):
        assert response.status_code == 401, response.content
        assert response["Content-Type"] == PROBLEM
        assert response.json()["code"] == "token_not_valid"
    assert world_snapshot(w.a1, w.a2, w.b1, w.c2) == before
    assert not Approval.objects.exists()


def test_a_partner_moves_money_above_the_threshold_at_once(api_world, settings):
    settings.APPROVAL_THRESHOLD = Decimal("100.00")
    w = api_world
    # A partner is not bank staff: it debits its own accounts on its customers' authority.
    assert post(w.a, body(w.a1, w.c2, amount="900.00")).status_code == 201
    assert balances(w.a1, w.c2) == [Decimal("100.00"), Decimal("900.00")]
    assert not Approval.objects.exists()


# --- idempotency -----------------------------------------------------------------------------------


def test_replay_returns_the_first_response_and_moves_money_once(api_world):
    w = api_world
    first = post(w.a, body(w.a1, w.c2), key="pay-1")
    second = post(w.a, body(w.a1, w.c2), key="pay-1")
    assert first.status_code == second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert balances(w.a1, w.c2) == [Decimal("874.50"), Decimal("125.50")]
    assert Transfer.objects.filter(kind="transfer").count() == 1


def test_same_key_with_another_body_is_a_conflict(api_world):
    w = api_world
    post(w.a, body(w.a1, w.c2), key="pay-1")
    before = snapshot(w)
    response = post(w.a, body(w.a1, w.c2, amount="1.00"), key="pay-1")
    assert response.status_code == 409
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "idempotency_key_reused"
    assert_nothing_moved(w, *before)


def test_keys_are_per_client(api_world):
    w = api_world
    assert post(w.a, body(w.a1, w.c2), key="same").status_code == 201
    response = post(w.b, body(w.b1, w.c2), key="same")
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert Transfer.objects.filter(kind="transfer").count() == 2


def test_refusal_is_replayed_not_retried(api_world):
    w = api_world
    first = post(w.b, body(w.b1, w.c2, amount="600.00"), key="big")
    assert first.status_code == 422
    assert first.json()["code"] == "insufficient_funds"
    # money arrives; the replay still answers the recorded refusal
    post(w.a, body(w.a1, w.b1, amount="500.00"), key="top-up")
    before = snapshot(w)
    second = post(w.b, body(w.b1, w.c2, amount="600.00"), key="big")
    assert second.status_code == 422
    assert second["Idempotent-Replayed"] == "true"
    assert second.json()["code"] == "insufficient_funds"
    assert second.json()["transfer_id"] == first.json()["transfer_id"]
    assert_nothing_moved(w, *before)


def test_a_refusal_found_after_accepting_is_replayed_with_its_status(api_world):
    # A destination that does not exist is found in its ledger, after the debit was prepared: the
    # 404 is recorded on the aborted transfer and replayed like any recorded refusal.
    w = api_world
    nowhere = {**body(w.a1, w.c2), "destination_account": missing_account_number(w.c2)}
    before = everything(w)
    first = post(w.a, nowhere, key="nowhere")
    assert_refused_and_recorded(first, before, everything(w), status=404, code="account_not_found")
    assert "Idempotent-Replayed" not in first
    before = everything(w)
    again = post(w.a, nowhere, key="nowhere")
    assert again.status_code == 404
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["transfer_id"] == first.json()["transfer_id"]
    assert everything(w) == before


def test_refusals_found_before_accepting_are_answered_again_not_replayed(api_world, settings):
    # Nothing is stored for these: the answer depends only on the request, the client's links and
    # the configuration, so a retry with the same key is checked again and answers the same.
    settings.MAX_TRANSFER_AMOUNT = Decimal("900.00")
    w = api_world
    cases = [
        (body(w.a1, w.a1), "same_account"),
        (body(w.a1, w.c2, amount="1.001"), "invalid_amount"),
        (body(w.a1, w.c2, amount="900.01"), "amount_above_maximum"),
        (body(w.b1, w.c2), "account_not_found"),  # B's account: A may not debit it
    ]
    before = everything(w)
    for index, (request_body, code) in enumerate(cases):
        answers = [post(w.a, request_body, key=f"early-{index}") for _attempt in range(2)]
        for response in answers:
            assert response.json()["code"] == code, (code, response.content)
            assert "Idempotent-Replayed" not in response, code
            assert "transfer_id" not in response.json(), code
        first, second = ({k: v for k, v in response.json().items() if k != "request_id"} for response in answers)
        assert first == second and answers[0].status_code == answers[1].status_code, code
        assert everything(w) == before, code  # nothing moved, no transfer, no audit event


def test_a_retried_same_account_request_answers_the_same_422_and_moves_nothing(api_world):
    w = api_world
    before = everything(w)
    for _attempt in range(2):
        response = post(w.a, body(w.a1, w.a1), key="same-1")
        assert response.status_code == 422
        assert response.json()["code"] == "same_account"
        assert "Idempotent-Replayed" not in response
    assert everything(w) == before
    # The key was not spent: once the request is right, it makes the transfer.
    assert post(w.a, body(w.a1, w.a2), key="same-1").status_code == 201


def test_missing_idempotency_key_is_refused(api_world):
    w = api_world
    before = snapshot(w)
    response = post(w.a, body(w.a1, w.c2), key=None)
    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "idempotency_key_required"
    assert_nothing_moved(w, *before)
    assert Transfer.objects.filter(kind="transfer").count() == 0


def test_overlong_idempotency_key_is_refused(api_world):
    w = api_world
    response = post(w.a, body(w.a1, w.c2), key="k" * 256)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_idempotency_key"
    assert Transfer.objects.filter(kind="transfer").count() == 0


# --- refusals: each answers a problem and moves nothing -----------------------------------------


# One test walks every case (a fresh world per case would cost a second each); each case has its
# own idempotency key so that a recorded refusal is not replayed into the next.
REFUSALS = [
    (lambda w: body(w.a1, w.c2, amount=125.5), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount=100), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount="-5.00"), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount="0.00"), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount="1.001"), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount="1e3"), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount="NaN"), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount="9" * 400), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount="١٢٣"), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount="１２"), 400, "invalid_amount"),  # full-width digits: Decimal() takes them
    (lambda w: body(w.a1, w.c2, amount="1e999"), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount="Infinity"), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount="-Infinity"), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount="0x10"), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount=None), 400, "validation_error"),
    (lambda w: body(w.a1, w.c2, amount=True), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount={"value": "1.00"}), 400, "invalid_amount"),
    (lambda w: body(w.a1, w.c2, amount="999999999999999999.99"), 422, "amount_above_maximum"),
    (lambda w: body(w.a1, w.c2, currency="cny"), 400, "invalid_currency"),
    (lambda w: body(w.a1, w.c2, currency="USD"), 422, "currency_mismatch"),
    (lambda w: body(w.a1, w.c2, colour="red"), 400, "unknown_field"),
    (lambda w: body(w.a1, w.c2, reference="x" * 141), 400, "validation_error"),
    (lambda w: body(w.a1, w.c2, reference="bell\x07"), 400, "invalid_reference"),
    (lambda w: body(w.a1, w.c2, reference="nul\x00"), 400, "validation_error"),
    (lambda w: body(w.a1, w.c2, reference=["a"]), 400, "validation_error"),
    (lambda w: body(w.a1, w.a1), 422, "same_account"),
    (lambda w: body(w.a1, w.c2, amount="1000.01"), 422, "insufficient_funds"),
    (lambda w: {**body(w.a1, w.c2), "destination_account": "01000000000100"}, 400, "invalid_account_number"),
    (lambda w: {**body(w.a1, w.c2), "destination_account": 12345}, 400, "validation_error"),
    (lambda w: body(w.a1, w.c2, reference=42), 400, "validation_error"),
    (lambda w: body(w.a1, w.c2, reference=True), 400, "validation_error"),
    (lambda w: {**body(w.a1, w.c2), "source_account": None}, 400, "validation_error"),
    (lambda w: {"amount": "1.00"}, 400, "validation_error"),
    (lambda w: ["not", "an", "object"], 400, "validation_error"),
    # another partner's account, and an account nobody links: exactly like a missing one
    (lambda w: body(w.b1, w.c2), 404, "account_not_found"),
    (lambda w: body(w.c2, w.a1), 404, "account_not_found"),
]


def test_refusals_move_nothing(api_world):
    w = api_world
    before = snapshot(w)
    for index, (make_body, status, code) in enumerate(REFUSALS):
        case = f"case {index}: {code}"
        response = post(w.a, make_body(w), key=f"refusal-{index}")
        assert response.status_code == status, (case, response.content)
        assert response["Content-Type"] == PROBLEM, case
        problem = response.json()
        assert problem["code"] == code, (case, problem)
        assert problem["status"] == status, case
        assert problem["type"].endswith(code) or code == "validation_error", case
        assert problem["title"] and problem["detail"], case
        if status == 400 and code not in ("invalid_reference", "idempotency_key_required"):
            assert problem["errors"], (case, problem)
            assert {"field", "code", "message"} <= set(problem["errors"][0]), case
        assert_nothing_moved(w, *before)


def test_foreign_account_answers_like_a_missing_one(api_world, make_account):
    w = api_world
    foreign = post(w.a, body(w.b1, w.c2)).json()
    missing_number = w.b1.number[:2] + "9999999999"
    from accounts.numbers import _check_digits

    missing_number += _check_digits(missing_number)
    missing = post(w.a, {**body(w.b1, w.c2), "source_account": missing_number}, key="k-2").json()
    assert foreign["code"] == missing["code"] == "account_not_found"
    assert foreign["status"] == missing["status"] == 404


def test_frozen_source_is_refused(api_world, actor):
    from accounts.services import account_freeze

    w = api_world
    account_freeze(actor=actor, number=w.a1.number, reason="test")
    before = snapshot(w)
    response = post(w.a, body(w.a1, w.c2))
    assert response.status_code == 422
    assert response.json()["code"] == "account_frozen"
    assert_nothing_moved(w, *before)


def test_crediting_a_ledgers_cash_account_is_refused_and_recorded(api_world):
    """Any customer account may be credited, not the ledgers' cash accounts: only cash deposits
    and withdrawals move them. Refused once accepted (the kind is read under the account's lock),
    inside one ledger and across two; a replay answers the same."""
    from accounts.services import cash_account_ensure

    w = api_world
    for key, ledger in (("c-1", "db1"), ("c-2", "db2")):
        cash = cash_account_ensure(ledger=ledger, currency=w.a1.currency)
        before = everything(w, cash)
        response = post(w.a, body(w.a1, cash), key=key)
        assert_refused_and_recorded(response, before, everything(w, cash), status=422, code="internal_account")
    before = everything(w)
    replay = post(w.a, body(w.a1, cash), key="c-2")
    assert replay.status_code == 422 and replay["Idempotent-Replayed"] == "true"
    assert everything(w) == before


def test_daily_limit_is_per_source_account_and_counts_what_it_moved_today(api_world, settings):
    settings.DAILY_TRANSFER_LIMIT = Decimal("100.00")
    w = api_world
    assert post(w.a, body(w.a1, w.c2, amount="60.00"), key="d-1").status_code == 201
    for key, destination in (("d-2", w.b1), ("d-3", w.c2)):  # inside one ledger, then across two
        before = everything(w)
        response = post(w.a, body(w.a1, destination, amount="40.01"), key=key)
        assert_refused_and_recorded(response, before, everything(w), status=422, code="daily_limit_exceeded")
        assert "60.00" in response.json()["detail"]
    before = everything(w)
    replay = post(w.a, body(w.a1, w.c2, amount="40.01"), key="d-3")
    assert replay.status_code == 422 and replay["Idempotent-Replayed"] == "true"
    assert everything(w) == before
    # Up to the limit is fine, and another account of the same partner has its own.
    assert post(w.a, body(w.a1, w.c2, amount="40.00"), key="d-4").status_code == 201
    assert post(w.a, body(w.a2, w.c2, amount="100.00"), key="d-5").status_code == 201
    assert balances(w.a1, w.a2, w.c2) == [Decimal("900.00"), Decimal("900.00"), Decimal("200.00")]


def test_closed_accounts_are_refused(api_world, actor, make_account):
    from accounts.models import PartnerAccountLink
    from accounts.services import account_close

    w = api_world
    emptied = make_account("db2", "0.00", holder="Partner A, closed")
    PartnerAccountLink.objects.create(user=w.partner_a, account_number=emptied.number)
    for number in (w.c2.number, emptied.number):
        account_close(actor=actor, number=number, reason="test")
    cases = [
        (body(w.a1, w.c2), "destination, across ledgers (found after the debit was prepared)"),
        (body(w.a2, w.c2), "destination, in one ledger"),
        (body(emptied, w.a1), "source, across ledgers"),
        (body(emptied, w.a2), "source, in one ledger"),
    ]
    for index, (request_body, case) in enumerate(cases):
        before = everything(w, emptied)
        response = post(w.a, request_body, key=f"closed-{index}")
        assert_refused_and_recorded(response, before, everything(w, emptied), status=422, code="account_closed")
        assert "closed" in response.json()["detail"], case


def test_only_a_completed_transfer_that_is_not_a_reversal_can_be_reversed(api_world):
    w = api_world
    refused = post(w.a, body(w.a1, w.a2, amount="5000.00"), key="too-much").json()
    assert refused["code"] == "insufficient_funds"
    paid = post(w.a, body(w.a1, w.b1, amount="100.00"), key="paid").json()["id"]
    reversal = w.b.post(f"{URL}{paid}/reverse/", {}, format="json", HTTP_IDEMPOTENCY_KEY="r-1").json()["id"]
    before = everything(w)
    # A may debit a2 (the aborted transfer's destination) and a1 (the reversal's): only the rule refuses.
    for transfer_id in (refused["transfer_id"], reversal):
        for _attempt in range(2):  # refused before a transfer is accepted: answered again, not replayed
            response = w.a.post(f"{URL}{transfer_id}/reverse/", {}, format="json", HTTP_IDEMPOTENCY_KEY="r-x")
            assert response.status_code == 422, response.content
            assert response["Content-Type"] == PROBLEM
            assert response.json()["code"] == "transfer_not_reversible"
            assert "Idempotent-Replayed" not in response and "transfer_id" not in response.json()
    assert everything(w) == before
    assert balances(w.a1, w.b1) == [Decimal("1000.00"), Decimal("500.00")]


def test_a_transfer_past_its_deadline_before_its_decision_times_out(api_world, settings):
    # TRANSACTION_TIMEOUT 0: the deadline has passed by the time the debit leg is prepared, so the
    # decision refuses (transfers.engine.legs.leg_decide) and the prepared debit is voided, as recovery
    # would void a transfer that never reached its decision in time.
    settings.TRANSACTION_TIMEOUT = 0
    w = api_world
    before = everything(w)
    response = post(w.a, body(w.a1, w.c2), key="late")
    assert_refused_and_recorded(response, before, everything(w), status=422, code="transfer_timed_out")
    # A missed deadline is not an answer to the request: retried under its key, it is attempted
    # anew (and, the deadline still 0, times out again), the first attempt giving its key up.
    before = everything(w)
    retried = post(w.a, body(w.a1, w.c2), key="late")
    assert_refused_and_recorded(retried, before, everything(w), status=422, code="transfer_timed_out")
    assert "Idempotent-Replayed" not in retried
    assert retried.json()["transfer_id"] != response.json()["transfer_id"]
    assert Transfer.objects.get(pk=response.json()["transfer_id"]).idempotency_key is None


BAD_BODIES = [
    (b'{"amount": ', "application/json", 400, "malformed_json"),
    (b"\xff\xfe", "application/json", 400, "malformed_json"),
    (b"[" * 100000 + b"]" * 100000, "application/json", 413, "payload_too_large"),
    (b'{"a": "' + b"x" * 70000 + b'"}', "application/json", 413, "payload_too_large"),
    (b"amount=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    (b"<xml/>", "text/xml", 415, "unsupported_media_type"),
    (b"[" * 5000 + b"]" * 5000, "application/json", 400, "malformed_json"),
    # JSON is UTF-8 (RFC 8259): another charset is refused, a codec that is no text encoding
    # (rot13, base64: a TypeError inside DRF's parser, a 500, before) included.
    (b'{"amount": "1.00"}', "application/json; charset=rot13", 415, "unsupported_media_type"),
    (b"e30=", "application/json; charset=base64", 415, "unsupported_media_type"),
    (b'{"reference": "caf\xe9"}', "application/json; charset=latin-1", 415, "unsupported_media_type"),
    (b'{"amount": "1.00"}', "application/json; charset=klingon", 415, "unsupported_media_type"),  # no codec
    ('{"amount": "1.00"}'.encode("utf-16"), "application/json; charset=utf-16", 415, "unsupported_media_type"),
    (b'{"reference": "caf\xe9"}', "application/json; charset=UTF-8", 400, "malformed_json"),
]


def test_bad_bodies_are_problems(api_world):
    w = api_world
    before = snapshot(w)
    for index, (raw, content_type, status, code) in enumerate(BAD_BODIES):
        response = w.a.generic("POST", URL, raw, content_type=content_type, HTTP_IDEMPOTENCY_KEY=f"bad-{index}")
        assert response.status_code == status, (index, response.content[:300])
        assert response["Content-Type"] == PROBLEM, index
        assert response.json()["code"] == code, (index, response.json())
        assert_nothing_moved(w, *before)


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", "utf8"])
def test_a_body_declared_utf8_in_any_spelling_is_accepted(api_world, charset):
    w = api_world
    raw = f'{{"source_account": "{w.a1.number}", "destination_account": "{w.c2.number}", "amount": "1.00", '
    raw += '"reference": "发票"}'
    response = w.a.generic(
        "POST", URL, raw.encode(), content_type=f"application/json; charset={charset}", HTTP_IDEMPOTENCY_KEY="utf8"
    )
    assert response.status_code == 201, response.content
    assert response.json()["reference"] == "发票"


def raw_transfer(w, *, amount: str = '"1.00"', reference: str = '"ok"') -> bytes:
    """A transfer body valid in every other field, with ``amount`` and ``reference`` as raw JSON text
    (what a client's own encoder may send, and ours would refuse to)."""
    accounts = f'"source_account": "{w.a1.number}", "destination_account": "{w.c2.number}"'
    return f'{{{accounts}, "amount": {amount}, "reference": {reference}}}'.encode()


# (amount, reference, status, code, (field, field error code) or None): each in an otherwise valid body.
ODD_BODIES = [
    ('"1.00"', r'"lone \ud800 surrogate"', 400, "validation_error", ("reference", "surrogate_characters_not_allowed")),
    ('"1.00"', r'"\udfff"', 400, "validation_error", ("reference", "surrogate_characters_not_allowed")),
    ('"1.00"', r'"nul \u0000 byte"', 400, "validation_error", ("reference", "null_characters_not_allowed")),
    ("1e999", '"ok"', 400, "invalid_amount", ("amount", "invalid_amount")),  # a JSON number, infinite as a float
    ("-1e999", '"ok"', 400, "invalid_amount", ("amount", "invalid_amount")),
    ('"1e999"', '"ok"', 400, "invalid_amount", ("amount", "invalid_amount")),
    ("NaN", '"ok"', 400, "malformed_json", None),  # not JSON, though Python's parser would take it
    ("Infinity", '"ok"', 400, "malformed_json", None),
]


def test_odd_input_in_an_otherwise_valid_body_is_a_problem_and_moves_nothing(api_world):
    w = api_world
    base = w.a.generic("POST", URL, raw_transfer(w), content_type="application/json", HTTP_IDEMPOTENCY_KEY="valid")
    assert base.status_code == 201, base.content  # the body is valid but for what each case changes
    before = everything(w)
    for index, (amount, reference, status, code, field_error) in enumerate(ODD_BODIES):
        raw = raw_transfer(w, amount=amount, reference=reference)
        response = w.a.generic("POST", URL, raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY=f"odd-{index}")
        assert response.status_code == status, (raw, response.content)
        assert response["Content-Type"] == PROBLEM, raw
        problem = response.json()
        assert problem["code"] == code, (raw, problem)
        if field_error is not None:
            assert [(e["field"], e["code"]) for e in problem["errors"]] == [field_error], (raw, problem)
        assert everything(w) == before, raw  # nothing moved, nothing stored


# The reference is the partner's text, shown on both statements. The API adds no rule of its own and
# normalises nothing: the engine's one rule (transfers.engine.accept.reference_clean, str.isprintable)
# decides, as in the back office. Printable text and spaces of any width are kept exactly as sent,
# however unusual; what is invisible or changes how the text around it reads is refused, so a
# statement line shows what it says.
PRINTABLE_REFERENCES = [
    "发票 2026-11 第42号",
    "ＡＢＣ１２３",  # full-width forms: kept, not folded to "ABC123"
    "Zoe\u0301 cafe\u0301",  # combining accents: kept, not composed
    "Payment \U0001f600",
    "\u0420\u0430yment",  # Cyrillic letters that look Latin: printable, kept
    "工资\u3000十一月",  # IDEOGRAPHIC SPACE, as a Chinese input method types it: a space, kept
    "no\u00a0break",  # NO-BREAK SPACE: a space too
    "x" * 140,
]
INVISIBLE_REFERENCES = [
    "invoice \u202e24-11",  # RIGHT-TO-LEFT OVERRIDE: would read "11-42"
    "pay\u2066ee\u2069",  # bidi isolates
    "a\u200db",  # ZERO WIDTH JOINER (and so emoji sequences joined by it)
    "a\u200bb",  # ZERO WIDTH SPACE
    "\ufeffBOM",
    "soft\u00adhyphen",
    "line\u2028break",
    "tab\there",
    "private \ue000 use",
]


def test_reference_keeps_printable_text_as_sent_and_refuses_invisible_characters(api_world):
    from django.conf import settings

    w = api_world
    for index, reference in enumerate(PRINTABLE_REFERENCES):
        response = post(w.a, body(w.a1, w.c2, amount="1.00", reference=reference), key=f"ref-ok-{index}")
        assert response.status_code == 201, (reference, response.content)
        assert response.json()["reference"] == reference
        # JSON escapes (\u53d1...) keep the body ASCII: a client guessing its charset (no
        # charset parameter is defined for JSON) reads the same text whatever it guesses.
        assert response.content.isascii(), response.content
        transfer = Transfer.objects.get(pk=response.json()["id"])
        lines = [
            e.description
            for alias in settings.LEDGERS
            for e in Entry.objects.using(alias).filter(transfer_id=transfer.pk)
        ]
        assert transfer.reference == reference and lines == [reference, reference]  # both statements
    before = everything(w)
    for index, reference in enumerate(INVISIBLE_REFERENCES):
        response = post(w.a, body(w.a1, w.c2, amount="1.00", reference=reference), key=f"ref-odd-{index}")
        assert response.status_code == 400, (reference, response.content)
        assert response["Content-Type"] == PROBLEM
        assert response.json()["code"] == "invalid_reference", (reference, response.json())
        assert everything(w) == before, reference


# --- authentication --------------------------------------------------------------------------------


def test_anonymous_is_401(api_world):
    w = api_world
    before = snapshot(w)
    response = post(w.anon, body(w.a1, w.c2))
    assert response.status_code == 401
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert_nothing_moved(w, *before)


def test_garbage_token_is_401(api_world):
    w = api_world
    w.anon.credentials(HTTP_AUTHORIZATION="Bearer not.a.token")
    response = w.anon.get(URL)
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


# --- reading ---------------------------------------------------------------------------------------


def test_detail_visible_to_its_partners_only(api_world):
    w = api_world
    transfer_id = post(w.a, body(w.a1, w.b1)).json()["id"]
    assert w.a.get(f"{URL}{transfer_id}/").status_code == 200
    assert w.b.get(f"{URL}{transfer_id}/").status_code == 200  # it credits B's account
    assert w.s.get(f"{URL}{transfer_id}/").status_code == 401  # staff: the back office
    other = post(w.a, body(w.a1, w.c2), key="k-2").json()["id"]
    response = w.b.get(f"{URL}{other}/")
    assert response.status_code == 404
    assert response.json()["code"] == "transfer_not_found"
    missing = w.b.get(f"{URL}{uuid.uuid4()}/")
    assert missing.status_code == 404
    assert missing.json()["code"] == "transfer_not_found"
    assert w.a.get(f"{URL}not-a-uuid/").json()["code"] == "not_found"


def test_list_filters_and_pages(api_world):
    w = api_world
    for n in range(5):
        post(w.a, body(w.a1, w.c2, amount=f"{n + 1}.00"), key=f"k-{n}")
    post(w.a, body(w.a2, w.a1, amount="1.00"), key="local")
    post(w.b, body(w.b1, w.c2, amount="501.00"), key="refused")  # aborted, B's
    post(w.b, body(w.b1, w.c2, amount="1.00"), key="b-ok")

    # A also sees the opening deposits into its two accounts
    mine = w.a.get(URL).json()
    assert len(mine["results"]) == 8
    assert [t["amount"] for t in mine["results"]][:2] == ["1.00", "5.00"]  # newest first
    theirs = w.b.get(URL, {"status": "aborted"}).json()["results"]
    assert [t["failure_code"] for t in theirs] == ["insufficient_funds"]
    assert len(w.a.get(URL, {"account": w.a2.number}).json()["results"]) == 2  # deposit + local
    assert w.a.get(URL, {"status": "aborted"}).json()["results"] == []
    assert w.a.get(URL, {"created_to": "2000-01-01"}).json()["results"] == []
    assert len(w.a.get(URL, {"created_from": "2000-01-01T00:00:00Z"}).json()["results"]) == 8

    seen = []
    page = w.a.get(URL, {"limit": 4}).json()
    seen += page["results"]
    assert page["next"]
    page = w.a.get(page["next"]).json()
    seen += page["results"]
    assert page["next"] is None
    assert len({t["id"] for t in seen}) == 8

    for params, code in [
        ({"status": "nope"}, "validation_error"),
        ({"account": "123"}, "invalid_account_number"),
        ({"created_from": "yesterday"}, "validation_error"),
        ({"limit": "0"}, "validation_error"),
        ({"colour": "red"}, "unknown_field"),
    ]:
        response = w.a.get(URL, params)
        assert response.status_code == 400, params
        assert response.json()["code"] == code, params
    assert w.a.get(URL, {"cursor": "garbage"}).status_code == 404


# --- reversal --------------------------------------------------------------------------------------


def test_reversal_by_the_destination_partner(api_world):
    w = api_world
    transfer_id = post(w.a, body(w.a1, w.b1, amount="100.00")).json()["id"]
    url = f"{URL}{transfer_id}/reverse/"
    # A paid B: A may not pull the money back out of B's account
    before = snapshot(w)
    refused = w.a.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="r-1")
    assert refused.status_code == 403
    assert refused.json()["code"] == "reversal_not_allowed"
    assert_nothing_moved(w, *before)
    assert w.b.post(url, {}, format="json").json()["code"] == "idempotency_key_required"

    reversed_ = w.b.post(url, {"reference": "refund"}, format="json", HTTP_IDEMPOTENCY_KEY="r-1")
    assert reversed_.status_code == 201, reversed_.content
    data = reversed_.json()
    assert data["kind"] == "reversal" and data["reversal_of"] == transfer_id
    assert balances(w.a1, w.b1) == [Decimal("1000.00"), Decimal("500.00")]

    replay = w.b.post(url, {"reference": "refund"}, format="json", HTTP_IDEMPOTENCY_KEY="r-1")
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == data["id"]
    before = snapshot(w)
    again = w.b.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="r-2")
    assert again.status_code == 409
    assert again.json()["code"] == "transfer_already_reversed"
    conflict = w.b.post(url, {"reference": "other"}, format="json", HTTP_IDEMPOTENCY_KEY="r-1")
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "idempotency_key_reused"
    assert_nothing_moved(w, *before)


def test_reversal_refusals(api_world):
    w = api_world
    transfer_id = post(w.a, body(w.a1, w.a2, amount="100.00")).json()["id"]
    url = f"{URL}{transfer_id}/reverse/"
    before = snapshot(w)
    assert w.b.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="x").json()["code"] == "transfer_not_found"
    assert w.anon.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="x").status_code == 401
    unknown = w.a.post(f"{URL}{uuid.uuid4()}/reverse/", {}, format="json", HTTP_IDEMPOTENCY_KEY="x")
    assert unknown.json()["code"] == "transfer_not_found"
    extra = w.a.post(url, {"amount": "1.00"}, format="json", HTTP_IDEMPOTENCY_KEY="x")
    assert extra.json()["code"] == "unknown_field"
    # the money left a2 again: a reversal needs it back
    post(w.a, body(w.a2, w.c2, amount="1100.00"), key="drain")
    before = snapshot(w)
    poor = w.a.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="y")
    assert poor.status_code == 422
    assert poor.json()["code"] == "insufficient_funds"
    assert_nothing_moved(w, *before)
