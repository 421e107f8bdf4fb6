"""Partner API door: tokens, throttling, problem+json for everything that can go wrong outside a
view's own logic (unknown paths, a ledger down), and the OpenAPI schema and docs."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connections
from django.test import override_settings

from bankcore.testing.books import balances
from bankcore.testing.personas import api_client_for, rates

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

PROBLEM = "application/problem+json"
TOKEN = "/api/v1/auth/token/"


def test_token_pair_then_refresh_then_use(api_world):
    w = api_world
    anon = api_client_for(None)
    response = anon.post(TOKEN, {"username": "partner-a", "password": "pw-partner-a"}, format="json")
    assert response.status_code == 200
    tokens = response.json()
    assert set(tokens) == {"access", "refresh"}
    refreshed = anon.post(f"{TOKEN}refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert refreshed.status_code == 200
    anon.credentials(HTTP_AUTHORIZATION=f"Bearer {refreshed.json()['access']}")
    assert anon.get(f"/api/v1/accounts/{w.a1.number}/").status_code == 200


def test_token_is_signed_with_jwt_secret_key(api_world):
    import jwt
    from django.conf import settings

    response = api_client_for(None).post(TOKEN, {"username": "partner-a", "password": "pw-partner-a"}, format="json")
    claims = jwt.decode(response.json()["access"], settings.JWT_SECRET_KEY, algorithms=["HS256"])
    assert claims["user_id"] == str(api_world.partner_a.pk) or claims["user_id"] == api_world.partner_a.pk
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(response.json()["access"], settings.SECRET_KEY, algorithms=["HS256"])


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"username": "partner-a", "password": "wrong"}, 401, "invalid_credentials"),
        ({"username": "nobody", "password": "x"}, 401, "invalid_credentials"),
        ({"username": "partner-a"}, 400, "validation_error"),
        ({"refresh": "garbage"}, 401, "token_not_valid"),
    ],
)
def test_token_refusals_are_problems(api_world, payload, status, code):
    url = f"{TOKEN}refresh/" if "refresh" in payload else TOKEN
    response = api_client_for(None).post(url, payload, format="json")
    assert response.status_code == status
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == code


def test_token_endpoint_locks_a_name_out_after_repeated_failures(api_world):
    """django-axes watches the token endpoint as it does the admin's login form (audit.backends):
    after AXES_FAILURE_LIMIT wrong passwords from one address even the right one is refused there,
    as a problem of its own (429 login_locked, Retry-After), and no token is issued."""
    from django.conf import settings

    anon = api_client_for(None)
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        wrong = anon.post(TOKEN, {"username": "partner-a", "password": "wrong"}, format="json")
        assert wrong.status_code == 401 and wrong["Content-Type"] == PROBLEM
    right = anon.post(TOKEN, {"username": "partner-a", "password": "pw-partner-a"}, format="json")
    assert right.status_code == 200  # a success resets the count (AXES_RESET_ON_SUCCESS)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        anon.post(TOKEN, {"username": "partner-a", "password": "wrong"}, format="json")
    right = anon.post(TOKEN, {"username": "partner-a", "password": "pw-partner-a"}, format="json")
    assert right.status_code == 429 and right["Content-Type"] == PROBLEM
    assert right.json()["code"] == "login_locked" and "access" not in right.json()
    assert right["Retry-After"] == str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    other = anon.post(TOKEN, {"username": "partner-b", "password": "pw-partner-b"}, format="json")
    assert other.status_code == 200 and "access" in other.json()  # only that name is locked


def test_an_over_long_username_is_refused_before_any_lookup(api_world):
    from axes.models import AccessAttempt
    from django.contrib.auth.models import User

    longest = User._meta.get_field("username").max_length
    assert longest is not None
    anon = api_client_for(None)
    response = anon.post(TOKEN, {"username": "a" * (longest + 1), "password": "x"}, format="json")
    assert response.status_code == 400 and response["Content-Type"] == PROBLEM
    assert response.json()["errors"][0]["field"] == "username"
    response = anon.post(TOKEN, {"username": "a" * 5000, "password": "x"}, format="json")
    assert response.status_code == 400  # was a 500: django-axes could not record so long a name
    assert not AccessAttempt.objects.exists()
    # the longest name a user can have is looked up, and refused like any wrong login
    response = anon.post(TOKEN, {"username": "a" * longest, "password": "x"}, format="json")
    assert response.status_code == 401 and response.json()["code"] == "invalid_credentials"


def test_access_token_expires(api_world):
    from datetime import timedelta

    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(api_world.partner_a)
    token.set_exp(lifetime=-timedelta(seconds=1))
    client = api_client_for(None)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.get("/api/v1/accounts/")
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


@pytest.mark.parametrize("change", ["deactivated", "password_changed", "deleted"])
def test_a_known_token_is_refused_as_soon_as_its_user_changes(api_world, change):
    """A token's user is read on every request (bankcore.fastpaths.jwt_user): deactivating a
    partner, changing its password or deleting it refuses its very next request."""
    w = api_world
    assert w.a.get(f"/api/v1/accounts/{w.a1.number}/").status_code == 200  # the token is known now
    user = w.partner_a
    if change == "deactivated":
        user.is_active = False
        user.save(update_fields=["is_active"])
    elif change == "password_changed":
        user.set_password("a-new-password")
        user.save(update_fields=["password"])
    else:
        user.delete()
    response = w.a.get(f"/api/v1/accounts/{w.a1.number}/")
    assert response.status_code == 401
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "token_not_valid"
    assert w.b.get(f"/api/v1/accounts/{w.b1.number}/").status_code == 200  # others unaffected


def test_a_known_token_still_expires(api_world):
    import time
    from datetime import timedelta

    from rest_framework_simplejwt.tokens import AccessToken

    token = AccessToken.for_user(api_world.partner_a)
    token.set_exp(lifetime=timedelta(seconds=1))
    client = api_client_for(None)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/v1/accounts/").status_code == 200
    time.sleep(1.2)
    response = client.get("/api/v1/accounts/")
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_a_tampered_token_is_refused_after_the_genuine_one_was_seen(api_world):
    w = api_world
    assert w.a.get("/api/v1/accounts/").status_code == 200
    genuine = w.a._credentials["HTTP_AUTHORIZATION"].removeprefix("Bearer ")
    header, payload, signature = genuine.split(".")
    tampered = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    client = api_client_for(None)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tampered}")
    response = client.get("/api/v1/accounts/")
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


def test_throttled_client_gets_429_with_retry_after(api_world):
    w = api_world
    with rates(user="3/min"):
        codes = [w.a.get("/api/v1/accounts/").status_code for _ in range(4)]
        other_client = w.b.get("/api/v1/accounts/")
    assert codes == [200, 200, 200, 429]
    assert other_client.status_code == 200  # per client
    with rates(user="3/min"):
        response = w.a.get("/api/v1/accounts/")
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "throttled"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert response.json()["retry_after"] == int(response["Retry-After"])


def test_throttle_counts_every_concurrent_request_once(api_world):
    """One client's concurrent requests are each counted (DRF's list in the cache lost the
    increments of requests that read it at the same time): at 5 per minute, 5 of 40 pass."""
    from concurrent.futures import ThreadPoolExecutor

    from bankcore.api.throttling import _gcra

    with ThreadPoolExecutor(40) as pool:
        waits = list(pool.map(lambda _: _gcra("throttle_race_1", 12.0, 60.0), range(40)))
        # A period the rate does not divide evenly: the times' rounding refuses none of the burst.
        sevens = list(pool.map(lambda _: _gcra("throttle_race_7", 60.0 / 7, 60.0), range(40)))
    assert sum(1 for wait in waits if wait == 0.0) == 5
    assert all(0 < wait <= 60 for wait in waits if wait)
    assert sum(1 for wait in sevens if wait == 0.0) == 7


def test_throttle_state_that_is_not_a_time_counts_as_none(api_world):
    """Whatever a key holds that is not a number (a value of another version) is read as no state,
    never a script error (a 500 for every request of that client)."""
    from django.core.cache import caches

    from bankcore.api.throttling import _gcra

    cache = caches["default"]
    cache.client.get_client(write=True).set(cache.make_key("throttle_odd"), b"\x80\x04]\x94.")  # type: ignore[attr-defined]
    assert _gcra("throttle_odd", 12.0, 60.0) == 0.0


def test_redis_down_the_money_path_keeps_working_and_the_throttle_counts_in_process(api_world, monkeypatch):
    """Redis really stops: the throttle fails open to each process's own meter (docs/operations.md,
    "When Redis is down") — transfers are made, exactly once per key, and a client is still held to
    its rate by this process. Once Redis is back, the counts are shared there again."""
    from django.core.cache import caches

    import bankcore.api.throttling as throttling
    from bankcore.testing.plugin import redis_server

    w = api_world
    server = redis_server()
    assert server is not None
    monkeypatch.setattr(throttling, "REDIS_RETRY_SECONDS", 0.5)
    monkeypatch.setattr(throttling, "_redis_failed_at", float("-inf"))  # the next test starts on Redis
    body = {"source_account": w.a1.number, "destination_account": w.c2.number, "amount": "5.00"}
    server.stop()
    try:
        with rates(user="3/min"):
            made = w.a.post("/api/v1/transfers/", body, format="json", HTTP_IDEMPOTENCY_KEY="redis-down-1")
            replayed = w.a.post("/api/v1/transfers/", body, format="json", HTTP_IDEMPOTENCY_KEY="redis-down-1")
            read = w.a.get(f"/api/v1/accounts/{w.a1.number}/")
            limited = w.a.get(f"/api/v1/accounts/{w.a1.number}/")
    finally:
        server.start()
    assert made.status_code == 201, made.content
    assert (replayed.status_code, replayed["Idempotent-Replayed"]) == (201, "true")
    assert read.status_code == 200 and read.json()["posted"] == "995.00"
    assert limited.status_code == 429 and limited["Retry-After"]
    assert balances(w.a1, w.c2) == [Decimal("995.00"), Decimal("5.00")]

    # Back: after REDIS_RETRY_SECONDS the meter is Redis's again.
    cache = caches["default"]
    cache.clear()
    import time

    time.sleep(0.6)
    with rates(user="3/min"):
        assert w.a.get(f"/api/v1/accounts/{w.a1.number}/").status_code == 200
    assert cache.keys("throttle_user_*")  # type: ignore[attr-defined]


def test_throttle_lets_one_more_through_each_interval(monkeypatch):
    """The generic cell rate algorithm (the local-memory path, on a clock the test moves): at 3 per
    minute, 3 at once, then one every 20 s, and Retry-After says when."""
    import bankcore.api.throttling as throttling

    now = [1_000_000.0]
    monkeypatch.setattr(throttling.time, "time", lambda: now[0])
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}):
        assert [throttling._gcra("throttle_pace", 20.0, 60.0) for _ in range(3)] == [0.0, 0.0, 0.0]
        assert throttling._gcra("throttle_pace", 20.0, 60.0) == pytest.approx(20.0)
        now[0] += 19.0
        assert throttling._gcra("throttle_pace", 20.0, 60.0) == pytest.approx(1.0)
        now[0] += 1.0
        assert throttling._gcra("throttle_pace", 20.0, 60.0) == 0.0
        assert throttling._gcra("throttle_pace", 20.0, 60.0) == pytest.approx(20.0)
        now[0] += 600.0  # idle for long: the full burst again, no more
        assert [throttling._gcra("throttle_pace", 20.0, 60.0) for _ in range(4)][-1] == pytest.approx(20.0)
        # A period the rate does not divide evenly, all at one instant: the rounding of the times
        # added up refuses none of the burst.
        assert [throttling._gcra("throttle_pace_7", 60.0 / 7, 60.0) for _ in range(7)] == [0.0] * 7


def test_throttle_counts_live_in_redis(api_world):
    from django.core.cache import caches

    cache = caches["default"]
    assert cache.__class__.__module__.startswith("django_redis")
    with rates(user="3/min"):
        api_world.a.get("/api/v1/accounts/")
    assert cache.keys("throttle_user_*")  # type: ignore[attr-defined]


def test_anonymous_token_requests_are_throttled_by_address(api_world):
    client = api_client_for(None)
    with rates(anon="2/min"):
        codes = [
            client.post(TOKEN, {"username": "x", "password": "y"}, format="json", REMOTE_ADDR="10.9.9.9").status_code
            for _ in range(3)
        ]
    assert codes == [401, 401, 429]


def test_unknown_paths_and_methods_are_problems(api_world):
    w = api_world
    for path in ("/api/v1/nothing/", "/api/v2/accounts/", "/api/v1/accounts", "/api/"):
        response = w.a.get(path)
        assert response.status_code == 404, path
        assert response["Content-Type"] == PROBLEM
        assert response.json()["code"] == "not_found"
    response = w.a.delete(f"/api/v1/accounts/{w.a1.number}/")
    assert response.status_code == 405
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "method_not_allowed"
    assert "GET" in response["Allow"] and "DELETE" not in response["Allow"]  # as the schema documents
    response = w.a.get("/api/v1/accounts/", HTTP_ACCEPT="text/html")
    assert response.status_code == 406
    assert response["Content-Type"] == PROBLEM
    response = w.a.get("/api/v1/accounts/?format=html")
    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM


@pytest.mark.parametrize(
    "accept", [None, "*/*", "application/json", "application/*", "application/json; charset=utf-8", "text/html, */*"]
)
def test_what_a_client_accepts_that_json_satisfies_is_answered_in_json(api_world, accept):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    response = api_world.a.get("/api/v1/accounts/", **headers)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


def test_admin_still_answers_html(api_world, client):
    response = client.get("/admin/nothing-here/")
    assert "problem" not in response["Content-Type"]


@pytest.mark.parametrize(
    "path",
    ["/admin/transfers/transfer/", "/admin/accounts/account/", "/admin/audit/auditevent/", "/admin/auth/user/"],
)
@pytest.mark.filterwarnings("ignore:DateTimeField .* received a naive datetime:RuntimeWarning")  # read in TIME_ZONE
def test_an_admin_lookup_the_database_cannot_take_is_a_400_not_a_500(client, path):
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("years", "years@example.com", "pw-years-1234"))
    field = "date_joined" if "auth" in path else "created_at"
    text = (
        "username"
        if "auth" in path
        else ("action" if "audit" in path else "reference" if "transfer" in path else "holder")
    )
    for query in (
        f"{field}__year=99999",
        f"{field}__year=0",
        f"{field}__year=abc",
        f"{field}__year__gte=10000",
        f"{field}__year__gte=1",  # year 1 at +08:00 is year 0 in UTC: an OverflowError before
        f"{field}__gte=0001-01-01",  # the same overflow, converting the bound
        f"{field}=0001-01-01T00:00:00",
        f"{field}__date__lt=0001-01-02",
        f"{field}__range=0001-01-01,2026-01-01",
        f"{field}__lt=99999-01-01",
        f"{text}__regex=(",  # MariaDB refused the pattern: OperationalError 1139
        f"{text}__iregex=a",  # a valid one too: the back office offers no regex lookups
    ):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400, (path, query, response.status_code)
        assert "problem" not in response["Content-Type"]  # the back office's own 400 page
    for query in (f"{field}__year=2026", f"{field}__year__gte=1900", f"{field}__gte=2026-01-01", f"{text}=x"):
        assert client.get(f"{path}?{query}").status_code == 200, (path, query)


def test_session_csrf_auth_and_messages_serve_the_back_office_not_the_api(api_world):
    """The four Django middleware are skipped under /api/ (bankcore.middleware): the API sets no
    cookie and its user comes from the JWT; the admin still has its session, its CSRF check and
    its messages."""
    from django.test import Client

    w = api_world
    response = w.a.get(f"/api/v1/accounts/{w.a1.number}/", HTTP_COOKIE="sessionid=forged; csrftoken=x")
    assert response.status_code == 200 and response.json()["number"] == w.a1.number
    assert not response.cookies and "Cookie" not in response.get("Vary", "")
    anonymous = api_client_for(None).get(f"/api/v1/accounts/{w.a1.number}/")
    assert anonymous.status_code == 401 and anonymous["Content-Type"] == PROBLEM

    browser = Client(enforce_csrf_checks=True)
    login = browser.get("/admin/login/")
    assert login.status_code == 200 and "csrftoken" in login.cookies
    refused = browser.post("/admin/login/", {"username": "x", "password": "y"})
    assert refused.status_code == 403  # no CSRF token
    token = login.cookies["csrftoken"].value
    answered = browser.post(
        "/admin/login/", {"username": "x", "password": "y", "csrfmiddlewaretoken": token, "next": "/admin/"}
    )
    assert answered.status_code == 200 and b"Please enter the correct" in answered.content


@pytest.fixture
def ledger_db2_down(monkeypatch):
    """db2 refuses every connection as if its server were gone (MySQL 2003); the open one is closed,
    as the server's going would have broken it."""
    import MySQLdb

    def refuse(*args, **kwargs):
        raise MySQLdb.OperationalError(2003, "Can't connect to MySQL server (test)")

    connection = connections["db2"]
    connection.close()
    monkeypatch.setattr(connection, "get_new_connection", refuse)
    yield


@pytest.mark.books_may_not_balance
def test_ledger_down_is_503_and_moves_nothing(api_world, request):
    w = api_world
    before = balances(w.a1, w.b1)
    request.getfixturevalue("ledger_db2_down")
    detail = w.a.get(f"/api/v1/accounts/{w.a2.number}/")
    assert detail.status_code == 503
    assert detail["Content-Type"] == PROBLEM
    assert detail.json()["code"] == "ledger_unavailable"
    assert detail["Retry-After"] == "1"
    transfer = w.a.post(
        "/api/v1/transfers/",
        {"source_account": w.a1.number, "destination_account": w.c2.number, "amount": "5.00"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="down-1",
    )
    assert transfer.status_code == 503, transfer.content
    assert transfer.json()["code"] == "ledger_unavailable"
    # db1 was not touched beyond the voided prepare: balances there are as before
    assert balances(w.a1, w.b1) == before
    assert before[0] == Decimal("1000.00")


def test_schema_documents_every_operation_and_its_problems(api_world):
    response = api_client_for(None).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    import json

    schema = json.loads(response.content)
    paths = schema["paths"]
    assert set(paths) == {
        "/api/v1/auth/token/",
        "/api/v1/auth/token/refresh/",
        "/api/v1/auth/token/revoke/",
        "/api/v1/accounts/",
        "/api/v1/accounts/{number}/",
        "/api/v1/accounts/{number}/entries/",
        "/api/v1/transfers/",
        "/api/v1/transfers/{transfer_id}/",
        "/api/v1/transfers/{transfer_id}/reverse/",
        "/api/v1/transfer-batches/",
        "/api/v1/transfer-batches/{batch_id}/",
    }
    create = paths["/api/v1/transfers/"]["post"]
    assert {"201", "400", "401", "404", "409", "413", "415", "422", "429", "503"} <= set(create["responses"])
    assert "insufficient_funds" in create["responses"]["422"]["description"]
    assert "idempotency_key_reused" in create["responses"]["409"]["description"]
    for code in ("approval_required", "role_required"):
        assert code in create["responses"]["403"]["description"]
    reverse = paths["/api/v1/transfers/{transfer_id}/reverse/"]["post"]
    for code in ("reversal_not_allowed", "role_required"):
        assert code in reverse["responses"]["403"]["description"]
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in create["parameters"])
    for operations in paths.values():
        for operation in operations.values():
            problem = operation["responses"]["401"]["content"]
            assert problem == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}

    # A replay answers what was recorded: a success, or a refusal found once the transfer was
    # accepted (404 for a missing destination, 422, 503); never what is computed again (400, 403, 409).
    def replayed_statuses(operation):
        return {status for status, r in operation["responses"].items() if "Idempotent-Replayed" in r.get("headers", {})}

    assert replayed_statuses(create) == {"201", "202", "404", "422", "503"}
    assert replayed_statuses(reverse) == {"201", "202", "422", "503"}
    assert set(create["responses"]["503"]["headers"]) == {"Retry-After", "Idempotent-Replayed"}
    batch = paths["/api/v1/transfer-batches/"]["post"]
    assert replayed_statuses(batch) == {"200"}  # every item's recorded outcome, answered again
    others = [op for ops in paths.values() for op in ops.values() if op not in (create, reverse, batch)]
    assert not any(replayed_statuses(operation) for operation in others)

    # 405: no operation to hang it on (it answers the methods a path does not list), so one shared
    # response that the description names.
    not_allowed = schema["components"]["responses"]["MethodNotAllowed"]
    assert "method_not_allowed" in not_allowed["description"]
    assert not_allowed["headers"]["Allow"]["required"] is True
    assert not_allowed["content"] == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert "#/components/responses/MethodNotAllowed" in schema["info"]["description"]


def test_swagger_ui(api_world):
    response = api_client_for(None).get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


def docs_page_urls() -> list[str]:
    import re

    page = api_client_for(None).get("/api/docs/").content.decode()
    assert "://" not in page, "the docs page names another host"
    return re.findall(r'(?:src|href)="([^"]*)"', page)


def test_swagger_ui_loads_nothing_from_another_host(api_world):
    urls = docs_page_urls()
    assert len(urls) >= 4, urls  # the favicon, the stylesheet and two scripts
    assert all(url.startswith("/") and not url.startswith("//") for url in urls), urls


def test_swagger_ui_assets_are_our_static_files(api_world):
    from django.conf import settings
    from django.contrib.staticfiles import finders

    prefix = "/" + settings.STATIC_URL.lstrip("/")
    for url in docs_page_urls():
        assert url.startswith(prefix), url
        assert finders.find(url.removeprefix(prefix)), url


# --- input serializers: one set of fields per class -------------------------------------------------


def test_input_serializers_share_their_fields_and_each_validates_its_own_data():
    """StrictInputSerializer builds its fields once per class: instances share them, yet concurrent
    validations on threads each keep their own data and errors."""
    from concurrent.futures import ThreadPoolExecutor

    from transfers.api import TransferCreateInput

    assert TransferCreateInput(data={}).fields is TransferCreateInput(data={}).fields

    def validate(i: int) -> tuple[bool, Any]:
        good = i % 2 == 0
        data = {"source_account": "x", "destination_account": "y", "amount": f"{i + 1}.00" if good else i}
        serializer = TransferCreateInput(data=data)
        serializer.is_valid()
        return good, serializer.errors

    with ThreadPoolExecutor(8) as pool:
        for good, errors in pool.map(validate, range(200)):
            # Every request has bad account numbers; only the odd ones a JSON number for an amount.
            assert set(errors) == ({"source_account", "destination_account"} | (set() if good else {"amount"}))
            if not good:
                assert errors["amount"][0].code == "invalid_amount"


def test_a_partial_input_serializer_or_one_with_a_context_gets_its_own_fields():
    from transfers.api import TransferCreateInput

    shared = TransferCreateInput(data={}).fields
    partial = TransferCreateInput(data={"reference": "x"}, partial=True)
    assert partial.fields is not shared
    assert partial.is_valid(), partial.errors  # DRF's partial: the required fields may be missing
    assert TransferCreateInput(data={}, context={"k": 1}).fields is not shared


def test_a_problem_echoing_an_odd_path_is_ascii_json_whatever_charset_a_client_guesses(api_world):
    # Found by a deep schemathesis run: the path's "\u00cd\"" came back as the UTF-8 bytes
    # C3 8D 5C 22, which a client guessing Shift-JIS reads as one character and a bare quote.
    path = '/api/v1/accounts/\U00016650\x7f9\u00cd"e\u00ac\u00f3\u660e/entries/'
    response = api_world.a.get(quote(path))
    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert response.content.isascii(), response.content
    assert json.loads(response.content.decode("shift_jis"))["instance"] == path
    assert response.json()["code"] == "invalid_account_number"


@pytest.mark.parametrize(
    ("content_type", "status", "code"),
    [
        # An RFC 2231 parameter in a charset Python does not know: Django raised ValueError while it
        # built the request, before any middleware, and gunicorn answered with its own bare 500.
        ("application/json; a*=klingon''x", 415, "unsupported_media_type"),
        ("application/json; charset*=klingon''utf-8", 415, "unsupported_media_type"),
        ("application/json", 400, "validation_error"),  # the same request, readable: to the view
    ],
)
def test_a_content_type_django_cannot_parse_is_a_problem_from_the_servers_handler(
    api_world, content_type, status, code
):
    """Sent to ``bankcore.wsgi.application``, which gunicorn runs: Django's test client builds its
    requests with its own class, which would raise the ValueError into the test itself."""
    import io

    from rest_framework_simplejwt.tokens import RefreshToken

    from bankcore.wsgi import application

    w = api_world
    before = balances(w.a1, w.a2, w.b1, w.c2)
    body = b'{"source_account": "x"}'
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/transfers/",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Bearer {RefreshToken.for_user(w.partner_a).access_token}",
        "HTTP_IDEMPOTENCY_KEY": "rfc2231",
        "REMOTE_ADDR": "127.0.0.1",
    }
    started: list[str] = []

    def start_response(status: str, headers: object, *_: object) -> Callable[[bytes], None]:
        started.append(status)
        return lambda _: None

    answer = b"".join(application(environ, start_response))
    assert started[0].startswith(str(status)), (started, answer[:300])
    problem = json.loads(answer)
    assert (problem["status"], problem["code"]) == (status, code), problem
    assert balances(w.a1, w.a2, w.b1, w.c2) == before
