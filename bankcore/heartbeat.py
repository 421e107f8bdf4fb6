"""Celery beat's heartbeat: proof that beat schedules, the broker carries and a worker runs.

Beat sends ``beat_heartbeat`` every ``BEAT_HEARTBEAT_INTERVAL_SECONDS``; the worker that runs it
writes the time into the shared cache (Redis in production). /metrics exports it as
``bankcore_beat_heartbeat_timestamp_seconds`` (``bankcore.metrics.StateCollector``), and the alert
``BankcoreBeatDown`` (deploy/prometheus/alerts.yml) fires when it is old or absent. Without it a
dead beat was silent: recovery, reconciliation and the audit chain's sealing all stop with it,
and the reconciliation alert only noticed after 15 minutes. Beat itself has no health endpoint.
"""

from __future__ import annotations

import time

from celery import shared_task

CACHE_KEY = "bankcore:beat-heartbeat"


@shared_task(name="bankcore.heartbeat.beat_heartbeat", ignore_result=True)
def beat_heartbeat() -> float:
    from django.core.cache import cache

    now = time.time()
    cache.set(CACHE_KEY, now, timeout=None)
    return now


def beat_heartbeat_last() -> float | None:
    """Unix time of the last heartbeat a worker ran, or None (never, or the cache is empty)."""
    from django.core.cache import cache

    value = cache.get(CACHE_KEY)
    return float(value) if value is not None else None
