"""Reconciliation: prove the books balance, or list every way they don't.

For every ledger: each account's posted balance equals the sum of its entries; its pending
counters equal the sum of its PREPARED legs; no account without overdraft is overdrawn. Across
ledgers: Σ posted + money in flight = 0 (money enters only from the internal cash accounts, so the
books sum to zero). Every entry is explained by the control plane: a leg of a transfer (or cash
movement, which is a transfer from or to the cash account) on that account, with that amount and
sign, and every completed transfer has its entries (``transfers.reconciliation_entries``); a pair of entries
inserted by hand that balance each other and their accounts' ``posted`` shows here. No transfer is
unfinished past its deadline. And the audit trail explains every customer account's state: it has
its ``account.opened`` event, and the last of its state events left it in the status it has — a
status changed in the database by hand, or a ledger restored behind the trail, shows here
(``_audited_states``).

A server that does not answer is reported as unreachable (``ReconciliationReport.unreachable``),
not as a traceback: the run goes on with the others, is not OK, and the books are not summed (a
sum without one ledger proves nothing).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.models import Count, Max, Sum
from django.utils import timezone

from accounts.models import Account, Entry
from audit.models import AuditEvent
from bankcore.db import once_more_if_connection_lost
from transfers.models import Transfer, TransferLeg
from transfers.reconciliation_entries import entries_explained
from transfers.sql_values import money_from_db

ZERO = Decimal("0.00")
# (what: a ledger's alias, "<alias> entries", or AUDIT_PHASE; how many done; of how many): accounts of
# a ledger, its entries, then the audit trail's account events.
Progress = Callable[[str, int, int], None]
AUDIT_PHASE = "audit"


@dataclass
class LedgerSummary:
    ledger: str
    accounts: int = 0
    posted_total: Decimal = ZERO
    pending_debits: Decimal = ZERO
    pending_credits: Decimal = ZERO
    prepared_legs: int = 0


@dataclass
class ReconciliationReport:
    started_at: datetime
    finished_at: datetime | None = None
    ledgers: list[LedgerSummary] = field(default_factory=list)
    in_flight: Decimal = ZERO
    grand_total: Decimal = ZERO
    discrepancies: list[str] = field(default_factory=list)
    # Aliases whose server did not answer ("default": the control plane), with the error.
    unreachable: dict[str, str] = field(default_factory=dict)
    recorded: bool = False  # the run is kept in ReconciliationRun (not when the control plane is down)

    @property
    def ok(self) -> bool:
        return not self.discrepancies and not self.unreachable

    def _unreachable(self, alias: str, exc: DatabaseError) -> None:
        self.unreachable[alias] = str(exc)
        what = "the control plane" if alias == "default" else f"ledger {alias}"
        self.discrepancies.append(f"{what} is unreachable, not checked: {exc}")

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "in_flight": str(self.in_flight),
            "grand_total": str(self.grand_total),
            "ledgers": [
                {
                    "ledger": s.ledger,
                    "accounts": s.accounts,
                    "posted_total": str(s.posted_total),
                    "pending_debits": str(s.pending_debits),
                    "pending_credits": str(s.pending_credits),
                    "prepared_legs": s.prepared_legs,
                }
                for s in self.ledgers
            ],
            "discrepancies": self.discrepancies,
            "unreachable": self.unreachable,
        }


@contextlib.contextmanager
def consistent_snapshot(using: str) -> Iterator[None]:
    """One consistent read view of a ledger: every query inside sees the same committed state."""
    connection = connections[using]
    if connection.vendor != "mysql":
        with transaction.atomic(using=using):
            yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    try:
        # Under REPEATABLE READ the first read fixes the snapshot for the whole block.
        with transaction.atomic(using=using):
            yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")


# The status each account state event leaves an account in (accounts.services).
STATE_EVENTS = {
    "account.opened": Account.Status.ACTIVE,
    "account.frozen": Account.Status.FROZEN,
    "account.unfrozen": Account.Status.ACTIVE,
    "account.closed": Account.Status.CLOSED,
}
# An account's change commits in its ledger, then its event in the control plane, milliseconds
# apart: what changed this recently is left to the next run rather than reported half-written.
AUDIT_GRACE = timedelta(seconds=60)


@dataclass(frozen=True)
class _AccountState:
    ledger: str
    number: str
    status: str
    created_at: datetime
    seen_at: datetime  # when its ledger's snapshot was taken


def _entry_sums(ledger: str) -> dict[int, Decimal]:
    """Each account's sum of entries, the table read in primary-key order: through the index on
    the account, which MariaDB picks by itself, the server spent four times as much
    (docs/performance.md, "Recovery and reconciliation at scale")."""
    connection = connections[ledger]
    hint = " FORCE INDEX (PRIMARY)" if connection.vendor == "mysql" else ""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT account_id, SUM(amount) FROM {Entry._meta.db_table}{hint} GROUP BY account_id")
        return {pk: money_from_db(total) for pk, total in cursor.fetchall()}


def _reconcile_ledger(
    ledger: str,
    report: ReconciliationReport,
    progress: Progress | None,
    chunk: int,
    states: list[_AccountState],
    grace: timedelta,
) -> None:
    summary = LedgerSummary(ledger=ledger)
    seen_at = timezone.now()
    numbers: dict[int, str] = {}
    with consistent_snapshot(ledger):
        entry_sums = _entry_sums(ledger)
        prepared: dict[tuple[int, str], Decimal] = {}
        for account_id, leg, total, count in (
            TransferLeg.objects.using(ledger)
            .filter(state=TransferLeg.State.PREPARED)
            .values_list("account_id", "leg")
            .annotate(total=Sum("amount"), count=Count("id"))
            .values_list("account_id", "leg", "total", "count")
        ):
            prepared[(account_id, leg)] = total
            summary.prepared_legs += count
        total_accounts = Account.objects.using(ledger).count()
        done = 0
        for account in Account.objects.using(ledger).order_by("pk").iterator(chunk_size=chunk):
            summary.accounts += 1
            numbers[account.pk] = str(account.number)
            summary.posted_total += account.posted
            summary.pending_debits += account.pending_debits
            summary.pending_credits += account.pending_credits
            entries = entry_sums.get(account.pk, ZERO)
            if account.posted != entries:
                report.discrepancies.append(
                    f"{ledger} account {account.number}: posted {account.posted} != sum of entries {entries}"
                )
            expected_debits = prepared.get((account.pk, TransferLeg.Leg.DEBIT), ZERO)
            expected_credits = prepared.get((account.pk, TransferLeg.Leg.CREDIT), ZERO)
            if account.pending_debits != expected_debits or account.pending_credits != expected_credits:
                report.discrepancies.append(
                    f"{ledger} account {account.number}: pending {account.pending_debits}/{account.pending_credits} "
                    f"!= prepared legs {expected_debits}/{expected_credits}"
                )
            if not account.allow_overdraft and account.posted - account.pending_debits < 0:
                report.discrepancies.append(f"{ledger} account {account.number}: overdrawn ({account.available})")
            if account.kind == Account.Kind.CUSTOMER:
                states.append(_AccountState(ledger, str(account.number), account.status, account.created_at, seen_at))
            done += 1
            if progress and (done % chunk == 0 or done == total_accounts):
                progress(ledger, done, total_accounts)
        orphan_entries = set(entry_sums) - set(numbers)
        for account_id in orphan_entries:
            report.discrepancies.append(f"{ledger}: entries for unknown account id {account_id}")
        report.discrepancies += entries_explained(ledger, settled=seen_at - grace, progress=progress)
    report.ledgers.append(summary)


def _in_flight() -> Decimal:
    """Money posted on one side of a transfer and not yet on the other: a PREPARED leg whose other
    leg is COMMITTED will be posted (recovery finishes it), so it counts — a debit −, a credit +.
    Read from the ledgers' recovery tables alone: a decided transfer has its decision leg committed
    and the other prepared — the credit committed and the debit held, or, when the credit leg was
    prepared at the control plane's server, the debit committed and the credit held."""
    prepared: list[tuple[uuid.UUID, str, Decimal]] = []
    for ledger in settings.LEDGERS:
        prepared.extend(
            TransferLeg.objects.using(ledger)
            .filter(state=TransferLeg.State.PREPARED)
            .values_list("transfer_id", "leg", "amount")
        )
    ids = sorted({transfer_id for transfer_id, _, _ in prepared})
    decided: set[uuid.UUID] = set()
    for ledger in settings.LEDGERS:
        for start in range(0, len(ids), 1000):
            decided.update(
                TransferLeg.objects.using(ledger)
                .filter(transfer_id__in=ids[start : start + 1000], state=TransferLeg.State.COMMITTED)
                .values_list("transfer_id", flat=True)
            )
    total = ZERO
    for transfer_id, leg, amount in prepared:
        if transfer_id in decided:
            total += amount if leg == TransferLeg.Leg.CREDIT else -amount
    return total


def _audited_states(
    states: list[_AccountState],
    report: ReconciliationReport,
    grace: timedelta,
    chunk: int,
    progress: Progress | None,
) -> None:
    """Each customer account's status against the audit trail, read after its ledger's snapshot
    (so every event of a change the snapshot shows has committed, but for a crash between the two
    commits): no ``account.opened`` event, or a status its last state event did not leave it in,
    is a discrepancy. An account opened, or whose last event was written, within ``grace`` before
    its ledger's snapshot is not judged: its event may still be on its way, or newer than the
    snapshot."""
    last: dict[str, tuple[str, datetime]] = {}
    events = AuditEvent.objects.filter(object_type="account", action__in=list(STATE_EVENTS))
    # Up to the newest event now: the count the progress shows holds while new ones are written.
    newest = events.aggregate(newest=Max("id"))["newest"] or 0
    events = events.filter(id__lte=newest)
    total = events.count() if progress else 0
    opened: set[str] = set()
    rows = events.order_by("id").values_list("object_id", "action", "created_at").iterator(chunk_size=chunk)
    for done, (number, action, at) in enumerate(rows, start=1):
        last[number] = (action, at)
        if action == "account.opened":
            opened.add(number)
        if progress and (done % chunk == 0 or done == total):
            progress(AUDIT_PHASE, done, total)
    for state in states:
        settled = state.seen_at - grace
        if state.number not in opened:
            if state.created_at < settled:
                report.discrepancies.append(
                    f"{state.ledger} account {state.number}: no account.opened event in the audit trail"
                )
            continue
        action, at = last[state.number]  # opened: it has a last event
        if at < settled and STATE_EVENTS[action] != state.status:
            report.discrepancies.append(
                f"{state.ledger} account {state.number}: {state.status}, but its last state event in the audit "
                f"trail ({action}, {at:%Y-%m-%d %H:%M:%S}) left it {STATE_EVENTS[action]}"
            )


def reconcile(
    *,
    progress: Progress | None = None,
    chunk: int = 2000,
    now: datetime | None = None,
    audit_grace: timedelta = AUDIT_GRACE,
) -> ReconciliationReport:
    """Check every invariant the books must satisfy. Read-only; safe beside live traffic (each
    ledger is read from one consistent snapshot; the cross-ledger sum is retried while transfers
    are in flight; account changes, and transfers finished, less than ``audit_grace`` before their
    ledger's snapshot are left to the next run)."""
    now = now or timezone.now()
    report = ReconciliationReport(started_at=now)
    states: list[_AccountState] = []

    def checked(alias: str, check: Callable[[], None]) -> bool:
        # What a failed attempt appended is dropped: a retry on a new connection appends it again.
        marks = len(report.discrepancies), len(states), len(report.ledgers)

        def attempt() -> None:
            del report.discrepancies[marks[0] :], states[marks[1] :], report.ledgers[marks[2] :]
            check()

        try:
            once_more_if_connection_lost(alias, attempt)
        except DatabaseError as exc:
            del report.discrepancies[marks[0] :], states[marks[1] :], report.ledgers[marks[2] :]
            report._unreachable(alias, exc)
            return False
        return True

    for ledger in settings.LEDGERS:
        checked(
            ledger,
            lambda ledger=ledger: _reconcile_ledger(ledger, report, progress, chunk, states, audit_grace),  # type: ignore[misc]  # default-bound lambda
        )
    if not report.unreachable:
        # Reads every ledger: only with all of them answering.
        report.in_flight = _in_flight()
        report.grand_total = sum((s.posted_total for s in report.ledgers), ZERO) + report.in_flight
        if report.grand_total != ZERO:
            report.discrepancies.append(
                f"the books do not balance: Σ posted + in flight = {report.grand_total} (expected 0)"
            )

    def control_plane() -> None:
        _audited_states(states, report, audit_grace, chunk, progress)
        overdue = now - timedelta(seconds=settings.TRANSACTION_TIMEOUT)
        stuck = Transfer.objects.filter(
            status__in=[Transfer.Status.PENDING, Transfer.Status.COMMITTED], deadline__lt=overdue
        )
        for transfer in stuck[:100]:
            report.discrepancies.append(
                f"transfer {transfer.id} is {transfer.status} past its deadline {transfer.deadline:%Y-%m-%d %H:%M:%S}"
            )

    checked("default", control_plane)
    report.finished_at = timezone.now()
    return report


def reconciliation_run(*, actor, progress: Progress | None = None) -> ReconciliationReport:
    """Reconcile and keep the result (``ReconciliationRun``) where operations can read it."""
    from transfers.models import ReconciliationRun

    report = reconcile(progress=progress)

    def record() -> None:
        ReconciliationRun.objects.create(
            started_at=report.started_at,
            finished_at=report.finished_at or timezone.now(),
            ok=report.ok,
            discrepancy_count=len(report.discrepancies),
            report=report.as_dict(),
            triggered_by=f"{actor.channel}:{actor.username}",
        )

    try:
        once_more_if_connection_lost("default", record)
    except DatabaseError as exc:
        if "default" not in report.unreachable:
            report._unreachable("default", exc)
    else:
        report.recorded = True
    return report
