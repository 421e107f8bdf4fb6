"""The transfer engine's gauges on /metrics, read from the control plane at scrape time (the
kernel's ``bankcore.metrics.StateCollector`` calls them; ``TransfersConfig.ready`` adds them)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from transfers.models import ReconciliationRun, Transfer


def transfers_stuck_count() -> int:
    """Transfers neither completed nor aborted past their deadline (also in ``/health``)."""
    open_statuses = [Transfer.Status.PENDING, Transfer.Status.COMMITTED]
    return Transfer.objects.filter(status__in=open_statuses, deadline__lt=timezone.now()).count()


def transfers_in_flight() -> Iterator[Metric]:
    """Transfers in flight (count and amount) and stuck past their deadline."""
    open_statuses = [Transfer.Status.PENDING, Transfer.Status.COMMITTED]
    in_flight = GaugeMetricFamily(
        "bankcore_transfers_in_flight", "Transfers not yet final (pending or committed).", labels=["status"]
    )
    amount = GaugeMetricFamily(
        "bankcore_transfers_in_flight_amount", "Total amount of the transfers in flight.", labels=["currency"]
    )
    counts: dict[str, int] = {str(status): 0 for status in open_statuses}
    amounts: dict[str, Decimal] = {settings.DEFAULT_CURRENCY: Decimal(0)}
    for status, currency, count, total in (
        Transfer.objects.filter(status__in=open_statuses)
        .values("status", "currency")
        .annotate(count=Count("pk"), total=Sum("amount"))
        .values_list("status", "currency", "count", "total")
    ):
        counts[str(status)] += count
        amounts[currency] = amounts.get(currency, Decimal(0)) + (total or 0)
    for status, count in counts.items():
        in_flight.add_metric([status], count)
    for currency, total in sorted(amounts.items()):
        amount.add_metric([currency], float(total))
    stuck = transfers_stuck_count()
    yield in_flight
    yield amount
    yield GaugeMetricFamily(
        "bankcore_transfers_stuck", "Transfers neither completed nor aborted past their deadline.", value=stuck
    )


def reconciliation_last_run() -> Iterator[Metric]:
    """What the last reconciliation found, and when it finished."""
    # Latest by primary key: runs are appended in time order, and the pk is indexed.
    last = ReconciliationRun.objects.order_by("-pk").only("finished_at", "ok", "discrepancy_count").first()
    if last is None:
        return
    yield GaugeMetricFamily(
        "bankcore_reconciliation_discrepancies",
        "Discrepancies found by the last reconciliation (0: the books balance).",
        value=last.discrepancy_count if not last.ok else 0,
    )
    yield GaugeMetricFamily(
        "bankcore_reconciliation_last_run_timestamp_seconds",
        "Unix time the last reconciliation finished.",
        value=last.finished_at.timestamp(),
    )
