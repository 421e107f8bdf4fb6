"""Business metrics, exported on /metrics (Prometheus).

The engine calls the ``record_*`` functions below; everything else about exporting (the
/metrics view, gauges computed at scrape time, gunicorn multiprocess mode, Celery workers) lives
here too, so that the money code only ever says *what happened*.

Metric names are a contract with ``deploy/prometheus/alerts.yml`` and the Grafana dashboard.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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


def record_transfer(*, kind: str, outcome: str, cross_ledger: bool, seconds: float) -> None:
    TRANSFERS.labels(kind=kind, outcome=outcome).inc()
    TRANSFER_DURATION.labels(kind=kind, scope="cross_ledger" if cross_ledger else "same_ledger").observe(seconds)


def record_recovery(actions: dict[str, int]) -> None:
    for action, count in actions.items():
        RECOVERY_ACTIONS.labels(action=action).inc(count)
