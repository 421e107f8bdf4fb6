"""The partner API through a real HTTP server (pytest-django's ``live_server``, a threaded WSGI
server on the test's MariaDB servers): the same idempotency key raced by concurrent clients. The
schema's contract is proven in ``test_api_contract``."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from bankcore.testing.books import balances

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]


def http(method: str, url: str, *, token: str, body: Any = None, headers: dict[str, str] | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def access_token(user) -> str:
    from rest_framework_simplejwt.tokens import RefreshToken

    return str(RefreshToken.for_user(user).access_token)


def test_same_key_raced_by_eight_clients_makes_one_transfer(api_world, live_server):
    from transfers.models import Transfer

    w = api_world
    token = access_token(w.partner_a)
    body = {"source_account": w.a1.number, "destination_account": w.c2.number, "amount": "100.00"}
    barrier = threading.Barrier(8)
    results: list[tuple[int, dict[str, str], dict[str, Any]]] = []

    def client() -> None:
        barrier.wait()
        results.append(
            http(
                "POST",
                f"{live_server.url}/api/v1/transfers/",
                token=token,
                body=body,
                headers={"Idempotency-Key": "race-1"},
            )
        )

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(status for status, _, _ in results) == [201] * 8, results
    assert len({data["id"] for _, _, data in results}) == 1
    replayed = [headers.get("Idempotent-Replayed") for _, headers, _ in results]
    assert replayed.count("true") == 7
    assert Transfer.objects.filter(kind="transfer").count() == 1
    assert balances(w.a1, w.c2) == [Decimal("900.00"), Decimal("100.00")]


def test_ledger_server_killed_answers_503_then_recovers(api_world):
    """A ledger's MariaDB server really dies (SIGKILL): reads and transfers touching it answer
    503 problems and nothing is lost. Once it is back, the process reconnects by itself, and the
    transfer retried under its idempotency key is made — once: an outage is not an outcome."""
    from django.conf import settings
    from django.utils import timezone

    from bankcore.testing.plugin import ledger_servers
    from transfers.models import Transfer
    from transfers.reconciliation import reconcile
    from transfers.recovery import transfers_recover_pass

    w = api_world
    server = ledger_servers()[1]  # db2: a ledger-only server (default lives with db1)
    body = {"source_account": w.a1.number, "destination_account": w.c2.number, "amount": "5.00"}
    server.kill()
    try:
        detail = w.a.get(f"/api/v1/accounts/{w.a2.number}/")
        assert detail.status_code == 503, detail.content
        assert detail["Content-Type"] == "application/problem+json"
        assert detail.json()["code"] == "ledger_unavailable"
        assert detail["Retry-After"] == "1"
        transfer = w.a.post("/api/v1/transfers/", body, format="json", HTTP_IDEMPOTENCY_KEY="down-1")
        assert transfer.status_code == 503, transfer.content
        assert transfer.json()["code"] == "ledger_unavailable"
        # the other ledger still answers
        assert w.a.get(f"/api/v1/accounts/{w.a1.number}/").status_code == 200
    finally:
        server.start()
    assert not transfers_recover_pass(grace_seconds=0).errors
    assert balances(w.a1, w.c2) == [Decimal("1000.00"), Decimal("0.00")]

    retried = w.a.post("/api/v1/transfers/", body, format="json", HTTP_IDEMPOTENCY_KEY="down-1")
    assert retried.status_code == 201, retried.content
    assert retried.json()["status"] == "completed"
    assert "Idempotent-Replayed" not in retried
    again = w.a.post("/api/v1/transfers/", body, format="json", HTTP_IDEMPOTENCY_KEY="down-1")
    assert again.status_code == 201, again.content
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == retried.json()["id"]
    assert balances(w.a1, w.c2) == [Decimal("995.00"), Decimal("5.00")]
    made = Transfer.objects.filter(client_id=f"user:{w.partner_a.pk}", amount=Decimal("5.00"))
    assert sorted(made.values_list("status", "failure_code")) == [("aborted", "ledger_unavailable"), ("completed", "")]
    assert reconcile(now=timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT + 5)).ok
