"""The partner API's doors as an auditor tries them: staff get no token, a refresh token is used
once and can be revoked, a deleted or deactivated user's refresh is a 401, a lockout is by username
and address and says so (429 ``login_locked``)."""

import pytest
from django.conf import settings
from rest_framework_simplejwt.tokens import RefreshToken

from bankcore.testing.books import world_snapshot
from bankcore.testing.personas import STAFF_PASSWORD, api_client_for

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

TOKEN = "/api/v1/auth/token/"
REFRESH = "/api/v1/auth/token/refresh/"
REVOKE = "/api/v1/auth/token/revoke/"
TRANSFERS = "/api/v1/transfers/"
PROBLEM = "application/problem+json"


def login(username: str, password: str, ip: str = "198.51.100.1"):
    return api_client_for(None).post(TOKEN, {"username": username, "password": password}, format="json", REMOTE_ADDR=ip)


def transfer_body(source, destination, amount="10.00"):
    return {"source_account": source.number, "destination_account": destination.number, "amount": amount}


@pytest.mark.parametrize("role", ["teller", "supervisor", "superuser"])
def test_staff_get_no_token_and_a_token_of_theirs_opens_nothing(api_world, make_staff, role):
    from django.contrib.auth.models import User

    w = api_world
    if role == "superuser":
        user = User.objects.create_superuser("root", password=STAFF_PASSWORD)
    else:
        user = make_staff(role)
    before = world_snapshot(w.a1, w.a2, w.c2)

    refused = login(user.username, STAFF_PASSWORD)
    assert refused.status_code == 401 and refused["Content-Type"] == PROBLEM
    assert refused.json()["code"] == "invalid_credentials" and "access" not in refused.json()
    # A token minted for them anyway (issued before they became staff, say) opens no endpoint.
    minted = api_client_for(user)
    posted = minted.post(TRANSFERS, transfer_body(w.a1, w.c2), format="json", HTTP_IDEMPOTENCY_KEY="staff-1")
    assert posted.status_code == 401 and posted.json()["code"] == "token_not_valid"
    assert minted.get(f"/api/v1/accounts/{w.c2.number}/").status_code == 401
    refresh = api_client_for(None).post(REFRESH, {"refresh": str(RefreshToken.for_user(user))}, format="json")
    assert refresh.status_code == 401
    assert world_snapshot(w.a1, w.a2, w.c2) == before


def test_a_partner_made_staff_is_refused_on_its_next_request(api_world):
    w = api_world
    assert w.a.get("/api/v1/accounts/").status_code == 200
    w.partner_a.is_staff = True
    w.partner_a.save(update_fields=["is_staff"])
    assert w.a.get("/api/v1/accounts/").status_code == 401


def test_a_refresh_token_is_used_once(api_world):
    w = api_world
    pair = login("partner-a", "pw-partner-a").json()
    anon = api_client_for(None)

    first = anon.post(REFRESH, {"refresh": pair["refresh"]}, format="json")
    again = anon.post(REFRESH, {"refresh": pair["refresh"]}, format="json")

    assert first.status_code == 200 and {"access", "refresh"} <= set(first.json())
    assert first.json()["refresh"] != pair["refresh"]
    assert again.status_code == 401 and again["Content-Type"] == PROBLEM
    assert again.json()["code"] == "token_not_valid" and "access" not in again.json()
    rotated = anon.post(REFRESH, {"refresh": first.json()["refresh"]}, format="json")
    assert rotated.status_code == 200
    anon.credentials(HTTP_AUTHORIZATION=f"Bearer {rotated.json()['access']}")
    assert anon.get(f"/api/v1/accounts/{w.a1.number}/").status_code == 200


def test_a_revoked_refresh_token_refreshes_nothing(api_world):
    pair = login("partner-a", "pw-partner-a").json()
    anon = api_client_for(None)

    revoked = anon.post(REVOKE, {"refresh": pair["refresh"]}, format="json")
    assert revoked.status_code == 204
    after = anon.post(REFRESH, {"refresh": pair["refresh"]}, format="json")
    assert after.status_code == 401 and after.json()["code"] == "token_not_valid"
    twice = anon.post(REVOKE, {"refresh": pair["refresh"]}, format="json")
    assert twice.status_code == 401 and twice["Content-Type"] == PROBLEM
    garbage = anon.post(REVOKE, {"refresh": "not-a-token"}, format="json")
    assert garbage.status_code == 401 and garbage.json()["code"] == "token_not_valid"


@pytest.mark.parametrize("change", ["deleted", "deactivated"])
def test_a_refresh_for_a_user_gone_since_is_a_401(api_world, change, logged_tracebacks):
    from django.contrib.auth.models import User

    from accounts.models import PartnerAccountLink

    pair = login("partner-b", "pw-partner-b").json()
    user = User.objects.get(username="partner-b")
    if change == "deleted":
        PartnerAccountLink.objects.filter(user=user).delete()
        user.delete()
    else:
        user.is_active = False
        user.save(update_fields=["is_active"])

    response = api_client_for(None).post(REFRESH, {"refresh": pair["refresh"]}, format="json")

    assert response.status_code == 401 and response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "token_not_valid"
    assert not logged_tracebacks.seen


def test_a_lockout_is_by_username_and_address_and_says_so(api_world):
    w = api_world
    before = world_snapshot(w.a1, w.a2)
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        wrong = login("partner-a", "wrong", ip="203.0.113.9")
        assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_credentials"

    locked = login("partner-a", "wrong", ip="203.0.113.9")  # the failure that reaches the limit
    right_but_locked = login("partner-a", "pw-partner-a", ip="203.0.113.9")

    for response in (locked, right_but_locked):
        assert response.status_code == 429 and response["Content-Type"] == PROBLEM
        assert response.json()["code"] == "login_locked" and "access" not in response.json()
        assert int(response["Retry-After"]) == int(settings.AXES_COOLOFF_TIME.total_seconds())
    # The partner itself, from its own address, is not locked out by someone else's guessing.
    elsewhere = login("partner-a", "pw-partner-a", ip="198.51.100.20")
    assert elsewhere.status_code == 200 and "access" in elsewhere.json()
    assert world_snapshot(w.a1, w.a2)["accounts"] == before["accounts"]


# --- strict input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            b'{"source_account": "<a1>", "destination_account": "<c2>", "amount": "1.00", "amount": "2.00"}',
            "duplicate_field",
        ),
        (b'{"source_account": "<a1>", "destination_account": "<c2>", "amount": " 12 "}', "invalid_amount"),
        (b'{"source_account": "<a1>", "destination_account": "<c2>", "amount": "1.00\\n"}', "invalid_amount"),
    ],
)
def test_input_is_taken_as_sent_or_refused(api_world, body, code):
    w = api_world
    raw = body.replace(b"<a1>", w.a1.number.encode()).replace(b"<c2>", w.c2.number.encode())
    before = world_snapshot(w.a1, w.c2)

    response = w.a.post(TRANSFERS, raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY="strict")

    assert response.status_code == 400 and response["Content-Type"] == PROBLEM
    assert response.json()["code"] == code
    assert world_snapshot(w.a1, w.c2) == before


def test_walking_the_account_numbers_is_throttled(api_world):
    from accounts.numbers import account_number_make
    from bankcore.testing.personas import rates

    w = api_world
    missing = [account_number_make(ledger_code=settings.LEDGERS["db2"], serial=10**10 - n) for n in range(1, 4)]
    with rates(not_found="2/hour"):
        answers = [
            w.a.post(
                TRANSFERS,
                transfer_body(w.a1, type("A", (), {"number": number})),
                format="json",
                HTTP_IDEMPOTENCY_KEY=f"walk-{n}",
            )
            for n, number in enumerate(missing)
        ]
        before = world_snapshot(w.a1, w.c2)
        # Once the allowance is spent, an existing destination is refused too: nothing tells them apart.
        existing = w.a.post(TRANSFERS, transfer_body(w.a1, w.c2), format="json", HTTP_IDEMPOTENCY_KEY="walk-real")
        other_partner = w.b.post(TRANSFERS, transfer_body(w.b1, w.c2), format="json", HTTP_IDEMPOTENCY_KEY="walk-b")

    assert [a.status_code for a in answers] == [404, 404, 429]
    assert answers[0].json()["code"] == "account_not_found" and answers[2].json()["code"] == "throttled"
    assert existing.status_code == 429 and int(existing["Retry-After"]) > 0
    assert world_snapshot(w.a1, w.c2)["accounts"][0] == before["accounts"][0]  # a1 untouched
    assert other_partner.status_code == 201  # the count is per partner
