"""``GET /health``: is every database and Redis answering? 200 if so, 503 naming what is down."""

from __future__ import annotations

import time

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, JsonResponse


def _check_database(alias: str) -> dict[str, object]:
    started = time.monotonic()
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "down" here; the detail helps the operator
        connections[alias].close_if_unusable_or_obsolete()
        return {"status": "down", "error": exc.__class__.__name__}
    return {"status": "up", "ms": round((time.monotonic() - started) * 1000, 1)}


def _check_redis() -> dict[str, object]:
    import redis

    started = time.monotonic()
    try:
        client = redis.Redis(
            host=str(settings.REDIS_HOST),
            port=settings.REDIS_PORT,
            password=settings.REDIS_PASSWORD,
            socket_connect_timeout=1,
            socket_timeout=1,
            # TLS when REDIS_TLS is on (settings.REDIS_TLS_OPTIONS: CA, client certificate).
            **({"ssl": True, **settings.REDIS_TLS_OPTIONS} if settings.REDIS_TLS_OPTIONS else {}),  # type: ignore[arg-type]
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
    body = {"status": "down" if down else "ok", "down": down, "checks": checks}
    return JsonResponse(body, status=503 if down else 200)
