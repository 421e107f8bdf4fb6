"""Business metrics, exported on /metrics (Prometheus).

The engine calls the ``record_*`` functions below; everything else about exporting (the
/metrics view, gauges computed at scrape time, gunicorn multiprocess mode, Celery workers) lives
here too, so that the money code only ever says *what happened*.

Metric names are a contract with ``deploy/prometheus/alerts.yml`` and the Grafana dashboard
(``bankcore/tests/deploy/test_configs.py`` checks that every name they use is exported).

Two kinds of metric:

- **Events** (counters, the latency histogram) are counted in the process where they happen: a
  gunicorn worker, a Celery worker's pool process. With ``PROMETHEUS_MULTIPROC_DIR`` set,
  prometheus_client keeps them in files there, and /metrics adds up every process's files.
- **State** (in flight, stuck, last reconciliation, databases up, audit chain) is read from the
  databases when /metrics is scraped (``StateCollector``), so it is right however many replicas
  and workers run, and costs a few indexed queries per scrape. Each app replica reports the same
  values: dashboards take ``max``, not ``sum``.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

TRANSFERS = Counter(
    "bankcore_transfers_total",
    "Transfers by kind and final outcome (completed, or the refusal code).",
    ["kind", "outcome"],
)
TRANSFER_DURATION = Histogram(
    "bankcore_transfer_duration_seconds",
    "Time from accept to the transfer's final state, in the process that ran it.",
    ["kind", "scope"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RECOVERY_ACTIONS = Counter("bankcore_recovery_actions_total", "Recovery actions taken, by action.", ["action"])
DB_RECONNECTS = Counter(
    "bankcore_db_reconnects_total",
    "Connections opened to replace one to the same database that failed (its server restarted or "
    "dropped it), by database alias.",
    ["alias"],
)
CELERY_TASKS = Counter(
    "bankcore_celery_tasks_total", "Celery tasks run by this worker, by task name and final state.", ["task", "state"]
)

# A ledger that does not answer SELECT 1 within this many seconds counts as down. Prometheus
# scrapes the app every 5 s, so a slow ledger must not stall the whole scrape.
LEDGER_PROBE_TIMEOUT = 1.0


def record_transfer(*, kind: str, outcome: str, cross_ledger: bool, seconds: float) -> None:
    TRANSFERS.labels(kind=kind, outcome=outcome).inc()
    TRANSFER_DURATION.labels(kind=kind, scope="cross_ledger" if cross_ledger else "same_ledger").observe(seconds)


def record_recovery(actions: dict[str, int]) -> None:
    for action, count in actions.items():
        RECOVERY_ACTIONS.labels(action=action).inc(count)


# This process's own reconnects, for /health (the counter above is summed over processes).
_reconnects: dict[str, int] = {}


def record_reconnect(*, alias: str) -> None:
    DB_RECONNECTS.labels(alias=alias).inc()
    _reconnects[alias] = _reconnects.get(alias, 0) + 1
    logger.info("database %s: reconnected after a failed connection", alias)


def reconnects_in_this_process() -> dict[str, int]:
    return dict(_reconnects)


def record_task(*, task: str, state: str) -> None:
    CELERY_TASKS.labels(task=task, state=state).inc()


# --- State read at scrape time -------------------------------------------------------------------


def _probe_ledger(alias: str) -> bool:
    """``SELECT 1`` on a connection of its own, with short timeouts (the request thread's pooled
    connection has MySQL's default read timeout: none)."""
    from django.db import connections

    settings_dict = connections[alias].settings_dict
    if connections[alias].vendor != "mysql":  # the embedded SQLite ledgers (`make run`)
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
                return cursor.fetchone() == (1,)
        finally:
            connections[alias].close()  # this probe thread's own connection; it ends with the probe
    import MySQLdb

    timeout = max(1, int(LEDGER_PROBE_TIMEOUT))
    options: dict[str, Any] = {"connect_timeout": timeout, "read_timeout": timeout, "write_timeout": timeout}
    host = settings_dict["HOST"] or "localhost"
    if host.startswith("/"):
        options["unix_socket"] = host
    else:
        options.update(host=host, port=int(settings_dict["PORT"] or 3306))
    connection = MySQLdb.connect(
        user=settings_dict["USER"], password=settings_dict["PASSWORD"], database=settings_dict["NAME"], **options
    )
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT 1")
        return cursor.fetchone() == (1,)
    finally:
        connection.close()


def ledgers_up(aliases: Iterable[str], timeout: float = LEDGER_PROBE_TIMEOUT) -> dict[str, bool]:
    """Probe every ledger at once; one that fails or does not answer in ``timeout`` is down."""
    aliases = list(aliases)
    pool = ThreadPoolExecutor(max_workers=max(1, len(aliases)), thread_name_prefix="ledger-probe")
    futures = {alias: pool.submit(_probe_ledger, alias) for alias in aliases}
    deadline = time.monotonic() + timeout + 0.5
    result: dict[str, bool] = {}
    for alias, future in futures.items():
        try:
            result[alias] = bool(future.result(timeout=max(0.0, deadline - time.monotonic())))
        except FutureTimeout:
            result[alias] = False
        except Exception as exc:  # any failure means "down"; the class name helps the operator
            logger.warning("metrics: ledger %s is down: %s", alias, exc.__class__.__name__)
            result[alias] = False
    pool.shutdown(wait=False)  # a probe stuck in connect() ends on its own connect_timeout
    return result


def _audit_chain_status() -> bool | None:
    """The last audit-chain verification's verdict, from ``settings.BANKCORE_AUDIT_CHAIN_STATUS``
    (a dotted path to a callable returning True, False, or None when never verified)."""
    from django.conf import settings

    path = getattr(settings, "BANKCORE_AUDIT_CHAIN_STATUS", "")
    if not path:
        return None
    module_name, _, name = path.rpartition(".")
    try:
        function: Callable[[], bool | None] = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return None  # the audit app does not provide it (yet): the gauge is left out
    return function()


# The apps' own gauges, read at scrape time: each app adds its parts when it is ready
# (``state_part_add`` in its AppConfig), so that the kernel imports no app.
STATE_PARTS: list[Callable[[], Iterator[Metric]]] = []


def state_part_add(part: Callable[[], Iterator[Metric]]) -> None:
    if part not in STATE_PARTS:
        STATE_PARTS.append(part)


class StateCollector:
    """Gauges computed from the databases at scrape time. A part whose database fails is left
    out (and logged) rather than failing the scrape; ``bankcore_ledger_up`` says which is down."""

    def collect(self) -> Iterator[Metric]:
        from django.conf import settings
        from django.db import DatabaseError

        up = ledgers_up(["default", *settings.LEDGERS])
        yield GaugeMetricFamily(
            "bankcore_control_plane_up",
            "1 if the control plane's database answers SELECT 1.",
            value=float(up["default"]),
        )
        ledger_up = GaugeMetricFamily("bankcore_ledger_up", "1 if the ledger answers SELECT 1.", labels=["ledger"])
        for alias in settings.LEDGERS:
            ledger_up.add_metric([alias], 1.0 if up[alias] else 0.0)
        yield ledger_up

        for part in (*STATE_PARTS, self._audit, self._beat):
            try:
                yield from part()
            except DatabaseError as exc:
                logger.warning("metrics: %s skipped: %s", part.__name__.strip("_"), exc)
            except Exception:
                logger.exception("metrics: %s failed", part.__name__.strip("_"))

    def _audit(self) -> Iterator[Metric]:
        from django.apps import apps

        status = _audit_chain_status()
        if status is not None:
            yield GaugeMetricFamily(
                "bankcore_audit_chain_ok",
                "1 if the last audit-chain verification passed.",
                value=1.0 if status else 0.0,
            )
        try:
            event = apps.get_model("audit", "AuditEvent")
        except LookupError:
            return
        field_names = {f.name for f in event._meta.get_fields()}
        if "seq" in field_names:  # unsealed = not yet in the hash chain (seq is unique, so indexed)
            yield GaugeMetricFamily(
                "bankcore_audit_events_unsealed",
                "Audit events not yet sealed into the hash chain.",
                value=event.objects.filter(seq__isnull=True).count(),
            )

    def _beat(self) -> Iterator[Metric]:
        from bankcore.heartbeat import beat_heartbeat_last

        try:
            last = beat_heartbeat_last()
        except Exception as exc:  # the cache (Redis) is down: the gauge is absent, which alerts too
            logger.warning("metrics: beat heartbeat skipped: %s", exc)
            return
        if last is not None:
            yield GaugeMetricFamily(
                "bankcore_beat_heartbeat_timestamp_seconds",
                "Unix time a worker last ran Celery beat's heartbeat task.",
                value=last,
            )


STATE = StateCollector()


# --- /metrics -------------------------------------------------------------------------------------


class _Merged:
    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def multiprocess_dir() -> str | None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return directory if directory and os.path.isdir(directory) else None


def exposition(*, state: bool = True) -> bytes:
    """The text exposition of this process's (or, in multiprocess mode, every process's)
    metrics, plus the scrape-time state gauges when ``state``."""
    extra = [STATE] if state else []
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        for attempt in range(3):
            try:
                return generate_latest(_Merged(registry, *extra))
            except FileNotFoundError:  # a dead worker's file removed between glob and read
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
    return generate_latest(_Merged(REGISTRY, *extra))


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: for a client in ``METRICS_ALLOWED_NETWORKS`` (loopback by default; the
    compose network in docker-compose.yml) or one with ``Authorization: Bearer <METRICS_TOKEN>``;
    a 404 for anyone else. The app guards it itself: nginx refusing it too is a second line, not
    the only one (gunicorn reached directly, or another proxy in front)."""
    import hmac
    import ipaddress

    from django.conf import settings
    from django.http import Http404, HttpResponse

    from bankcore.actors import client_ip

    token = settings.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    bearer = bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    address = client_ip(request)
    allowed = address is not None and any(
        ipaddress.ip_address(address) in ipaddress.ip_network(network) for network in settings.METRICS_ALLOWED_NETWORKS
    )
    if not (bearer or allowed):
        raise Http404("No such page.")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


# --- Celery workers -------------------------------------------------------------------------------


def worker_metrics_server(port: int, addr: str = "127.0.0.1") -> tuple[Any, Any]:
    """Serve the Celery worker's event metrics (recovery actions, tasks, transfers made by tasks)
    on ``port``, from the main worker process. The tasks run in the pool's child processes, so
    their counters are only visible with ``PROMETHEUS_MULTIPROC_DIR`` set (docker-compose.yml
    sets it); without it only the main process's (mostly empty) counters are served."""
    from prometheus_client import start_http_server

    registry = REGISTRY
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        logger.warning("PROMETHEUS_MULTIPROC_DIR is not set: the worker's pool processes' counters are not exported")
    server = start_http_server(port, addr=addr, registry=registry)
    logger.info("Celery worker metrics on http://%s:%s/metrics", addr, port)
    return server  # (server, thread): tests shut it down
