"""``GET /health``: is every database and Redis answering? 200 if so, 503 naming what is down.

Also, for an operator (not part of the verdict, which load balancers act on): how many times this
process reconnected to each database after a connection failed, and how many transfers are past
their deadline without being final (recovery finishes them within RECOVERY_INTERVAL_SECONDS; more
than that means recovery is not running or a ledger is down)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse

from bankcore.metrics import reconnects_in_this_process


def _check_database(alias: str) -> dict[str, object]:
    started = time.monotonic()
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "down" here; the detail helps the operator
        connections[alias].close_if_unusable_or_obsolete()
        check: dict[str, object] = {"status": "down", "error": exc.__class__.__name__}
    else:
        check = {"status": "up", "ms": round((time.monotonic() - started) * 1000, 1)}
    check["reconnects"] = reconnects_in_this_process().get(alias, 0)
    return check


# What the apps add to the report (``health_fact_add`` in their AppConfig, so that the kernel
# imports no app): a name and a function; None when its database is down (its check says so).
FACTS: dict[str, Callable[[], object]] = {}


def health_fact_add(name: str, fact: Callable[[], object]) -> None:
    FACTS[name] = fact


def _facts() -> dict[str, object]:
    from django.db import DatabaseError

    found: dict[str, object] = {}
    for name, fact in FACTS.items():
        try:
            found[name] = fact()
        except DatabaseError:
            found[name] = None
    return found


def _check_redis() -> dict[str, object]:
    import redis

    # TLS when REDIS_TLS is on (settings.REDIS_TLS_OPTIONS: CA, client certificate).
    tls: dict[str, Any] = {"ssl": True, **settings.REDIS_TLS_OPTIONS} if settings.REDIS_TLS_OPTIONS else {}
    started = time.monotonic()
    try:
        client = redis.Redis(
            host=str(settings.REDIS_HOST),
            port=settings.REDIS_PORT,
            password=settings.REDIS_PASSWORD,
            socket_connect_timeout=1,
            socket_timeout=1,
            **tls,
        )
        client.ping()
    except Exception as exc:
        return {"status": "down", "error": exc.__class__.__name__}
    return {"status": "up", "ms": round((time.monotonic() - started) * 1000, 1)}


def health(request: HttpRequest) -> JsonResponse:
    checks: dict[str, dict[str, object]] = {"control_plane": _check_database("default")}
    checks.update({f"ledger:{alias}": _check_database(alias) for alias in settings.LEDGERS})
    if settings.REDIS_HOST:
        checks["redis"] = _check_redis()
    down = sorted(name for name, check in checks.items() if check["status"] != "up")
    body = {"status": "down" if down else "ok", "down": down, "checks": checks, **_facts()}
    return JsonResponse(body, status=503 if down else 200)
