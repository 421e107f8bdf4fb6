"""Recovery: finish forward what was decided, void what was not, exactly once.

Run by Celery beat every few seconds and by ``manage.py recover_transfers``. The rule it applies
is the engine's (``transfers.engine``): a transfer is decided when one of its legs is COMMITTED
(the credit leg; or the debit leg, when the credit leg was prepared in the control plane's own
transaction), and aborted once a VOIDED tombstone holds the key of the leg that was never
prepared (the decision's) instead. Every step is a conditional update or
guarded by the legs' unique key, so it is safe to run twice, or from two workers at once, or
beside live coordinators:

- COMMITTED transfers (the control plane's hint) → commit their prepared legs, then COMPLETED;
- PENDING transfers past the grace period → if a leg is COMMITTED, finish them forward; once past
  their deadline, tombstone each leg not written yet (the abort decision), record ABORTED and
  void the prepared leg;
- PREPARED legs whose transfer is unknown or ABORTED → voided.

A pass works in batches, each step one transaction per server for the whole batch
(``transfers.recovery_sql``): the legs of every transfer read with one query per ledger, the legs
committed or voided with one commit per ledger, the transfers completed or aborted with one commit
of the control plane. Thousands of transfers left stuck by an outage settle in seconds
(docs/performance.md, "Recovery and reconciliation at scale").
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import Q, QuerySet
from django.utils import timezone

from bankcore.actors import Actor, Channel
from bankcore.faults import fault_point
from bankcore.metrics import record_recovery, record_transfer
from transfers.approval_holds import approvals_expire, holds_orphaned_release
from transfers.engine.legs import ENTRY_KIND
from transfers.engine.outcome import transfer_event
from transfers.errors import TransferTimedOut
from transfers.models import Transfer, TransferLeg
from transfers.recovery_sql import (
    LegKey,
    LegRow,
    recovery_legs_commit,
    recovery_legs_read,
    recovery_legs_void,
    recovery_tombstones_insert,
    recovery_transfers_abort,
    recovery_transfers_complete,
)

logger = logging.getLogger(__name__)

Leg = TransferLeg.Leg
LegState = TransferLeg.State
Status = Transfer.Status

# A live coordinator finishes a transfer within milliseconds; recovery waits this long before
# stepping in, so that the two rarely contend (they would still be correct if they did).
DEFAULT_GRACE_SECONDS = 2.0


@dataclass
class RecoveryReport:
    actions: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.actions.values())


def _timed_out() -> TransferTimedOut:
    return TransferTimedOut("The transfer did not finish within its deadline and was voided.")


def _legs_of(transfer: Transfer) -> tuple[tuple[str, str], tuple[str, str]]:
    """(leg, ledger) of each of the transfer's legs."""
    return (Leg.DEBIT, transfer.source_ledger), (Leg.CREDIT, transfer.destination_ledger)


def _state(row: LegRow | None) -> str | None:
    return row.state if row else None


class _Pass:
    """One pass's batch steps, each run per ledger (or in the control plane) so that one server
    down fails only what needs it: its error is recorded and the rest carries on."""

    def __init__(self, actor: Actor, report: RecoveryReport) -> None:
        self.actor, self.report = actor, report

    def attempt(self, what: str, step: Callable[..., Any], *args: object) -> Any:
        try:
            return step(*args)
        except DatabaseError as exc:
            logger.warning("recovery: %s failed: %s", what, exc)
            self.report.errors.append(f"{what}: {exc}")
            return None

    def count(self, action: str, n: int) -> None:
        if n:
            self.report.actions[action] += n

    def leg_states(self, transfers: Sequence[Transfer]) -> dict[uuid.UUID, dict[str, str | None]]:
        """The state of each leg of each transfer in its ledger (None: not there): where its
        decision lives. One query per ledger for all of them; a transfer with a leg in a ledger
        that did not answer is left out. A local transfer's legs are both in one ledger and commit
        together."""
        wanted: dict[str, set[uuid.UUID]] = defaultdict(set)
        for transfer in transfers:
            for _, ledger in _legs_of(transfer):
                wanted[ledger].add(transfer.id)
        found: dict[str, dict[LegKey, LegRow]] = {}
        for ledger, ids in wanted.items():
            rows = self.attempt(f"legs in {ledger}", recovery_legs_read, ledger, sorted(ids))
            if rows is not None:
                found[ledger] = rows
        return {
            transfer.id: {leg: _state(found[ledger].get((transfer.id, leg))) for leg, ledger in _legs_of(transfer)}
            for transfer in transfers
            if all(ledger in found for _, ledger in _legs_of(transfer))
        }

    def finished(self, transfers: Sequence[Transfer], action: str) -> None:
        """Count transfers recovery brought to their end, as the engine counts those it ends
        itself (the coordinator that left them unfinished counted nothing)."""
        self.count(action, len(transfers))
        for transfer in transfers:
            record_transfer(
                kind=transfer.kind,
                outcome=transfer.failure_code or transfer.status,
                cross_ledger=transfer.is_cross_ledger,
                seconds=max(0.0, ((transfer.finished_at or timezone.now()) - transfer.created_at).total_seconds()),
            )

    def finish_forward(self, transfers: Sequence[Transfer]) -> None:
        """Commit the prepared legs of decided transfers, one commit per ledger, then record them
        COMPLETED, one commit of the control plane. A transfer with a leg in a ledger that failed
        is left to the next pass."""
        if not transfers:
            return
        now = timezone.now()
        legs: dict[str, dict[LegKey, tuple[str, str]]] = defaultdict(dict)
        for transfer in transfers:
            for leg, ledger in _legs_of(transfer):
                legs[ledger][(transfer.id, leg)] = (ENTRY_KIND[transfer.kind], transfer.reference)
        failed: set[str] = set()
        for ledger, batch in legs.items():
            committed = self.attempt(f"commit {len(batch)} legs in {ledger}", recovery_legs_commit, ledger, batch, now)
            if committed is None:
                failed.add(ledger)
            else:
                self.count("leg_committed", len(committed))
        ready = {t.id: t for t in transfers if not failed & {t.source_ledger, t.destination_ledger}}
        if not ready:
            return

        def record(ids: list[uuid.UUID]) -> None:
            for pk in ids:
                transfer_event(ready[pk], self.actor, "transfer.completed")

        done = self.attempt(f"complete {len(ready)} transfers", recovery_transfers_complete, list(ready), now, record)
        completed = [ready[pk] for pk in done or []]
        for transfer in completed:
            transfer.status, transfer.finished_at = Status.COMPLETED, now
            transfer.committed_at = transfer.committed_at or now
        self.finished(completed, "transfer_completed")

    def abort(self, transfers: Sequence[Transfer], states: dict[uuid.UUID, dict[str, str | None]]) -> None:
        """Undecided transfers past their deadline (``states``: their legs', ``leg_states``): a
        tombstone under the key of each leg not written yet (the decision's among them), one
        statement per ledger; read again, those a coordinator's decision got to first are finished
        forward; the rest are recorded ABORTED (one commit of the control plane) and their prepared
        legs voided (one commit per ledger). A transfer with a leg in a ledger that did not answer
        is left to the next pass."""
        if not transfers:
            return
        now = timezone.now()
        states = {t.id: states[t.id] for t in transfers if t.id in states}
        tombstones: dict[str, dict[LegKey, tuple[str, Any]]] = defaultdict(dict)
        for transfer in transfers:
            for leg, ledger in _legs_of(transfer):
                # A local transfer's decision is its credit leg (its legs commit together).
                if transfer.id in states and states[transfer.id][leg] is None:
                    if transfer.is_cross_ledger or leg == Leg.CREDIT:
                        tombstones[ledger][(transfer.id, leg)] = (transfer.kind, transfer.business_date)
        for ledger, legs in tombstones.items():
            if self.attempt(f"tombstones in {ledger}", recovery_tombstones_insert, ledger, legs, now) is None:
                for transfer_id, _ in legs:
                    states.pop(transfer_id, None)
        tombstoned = {transfer_id for legs in tombstones.values() for transfer_id, _ in legs}
        touched = [t for t in transfers if t.id in tombstoned and t.id in states]
        for transfer in touched:
            del states[transfer.id]
        states.update(self.leg_states(touched))
        self.finish_forward([t for t in transfers if LegState.COMMITTED in states.get(t.id, {}).values()])
        undecided = {t.id: t for t in transfers if t.id in states and LegState.COMMITTED not in states[t.id].values()}
        if not undecided:
            return
        fault_point("after_tombstone")
        error = _timed_out()

        def record(ids: list[uuid.UUID]) -> None:
            for pk in ids:
                transfer_event(undecided[pk], self.actor, "transfer.aborted", failure_code=error.code)

        done = self.attempt(
            f"abort {len(undecided)} transfers",
            recovery_transfers_abort,
            list(undecided),
            now,
            error.code,
            error.detail,
            record,
        )
        aborted = [undecided[pk] for pk in done or []]
        for transfer in aborted:
            transfer.status, transfer.finished_at = Status.ABORTED, now
            transfer.failure_code, transfer.failure_detail = error.code, error.detail[:500]
        # A local transfer's legs commit together, except a hold's (``transfer_hold``): its debit
        # leg alone is prepared, and is released here.
        self.void(
            (transfer, leg)
            for transfer in aborted
            for leg, _ in _legs_of(transfer)
            if transfer.is_cross_ledger or states[transfer.id][leg] == LegState.PREPARED
        )
        self.finished(aborted, "transfer_aborted")

    def void(self, legs: Iterable[tuple[Transfer, str]], action: str = "") -> None:
        """Void those of ``legs`` still prepared, one commit per ledger."""
        now = timezone.now()
        grouped: dict[str, list[LegKey]] = defaultdict(list)
        for transfer, leg in legs:
            grouped[dict(_legs_of(transfer))[leg]].append((transfer.id, leg))
        for ledger, keys in grouped.items():
            voided = self.attempt(f"void {len(keys)} legs in {ledger}", recovery_legs_void, ledger, keys, now)
            if voided and action:
                self.count(action, len(voided))


def _uuid_or_none(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def transfers_recover(
    *,
    actor: Actor | None = None,
    now: datetime | None = None,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    batch_size: int = 1000,
    transfer_ids: list[str] | None = None,
) -> RecoveryReport:
    """One recovery pass over the control plane and every ledger, in batches of up to
    ``batch_size`` transfers of each kind (COMMITTED, PENDING) and prepared legs per ledger, batch
    after batch while the last one was full and went without an error. Never raises for one stuck
    transfer or one ledger that is down: it records the error and carries on with the rest.

    With ``transfer_ids`` (the back office's "run recovery" on stuck transfers), only those
    transfers, by the same rules, in one batch; the ones not due (final, or within their deadline
    or grace) are counted as ``skipped``, and the ledgers are not swept for orphan legs."""
    actor = actor or Actor.system(Channel.TASK, "recovery")
    now = now or timezone.now()
    report = RecoveryReport()
    steps = _Pass(actor, report)
    if transfer_ids is None:
        transfers = Transfer.objects.all()
    else:
        # An id that is no UUID names no transfer: left out, as an unknown one finds none (it made
        # the query raise ValidationError, a 500 in the back office).
        transfers = Transfer.objects.filter(pk__in=[pk for pk in map(_uuid_or_none, transfer_ids) if pk is not None])
    grace = now - timedelta(seconds=grace_seconds)
    while _batch_recover(transfers, steps, now, grace, batch_size, transfer_ids is not None):
        pass
    if transfer_ids is None:
        for ledger in settings.LEDGERS:
            after: int | None = 0
            while after is not None:
                after = steps.attempt(
                    f"orphan legs in {ledger}", _void_orphan_legs, ledger, grace, steps, batch_size, after
                )
        steps.attempt("expired approvals", _expire_approvals, actor, report, now)
    record_recovery(report.actions)
    return report


def _batch_recover(
    transfers: QuerySet[Transfer], steps: _Pass, now: datetime, grace: datetime, batch_size: int, chosen: bool
) -> bool:
    """One batch of ``transfers_recover``; True if another may follow (this one was full, settled
    transfers and went without an error)."""
    report, errors = steps.report, len(steps.report.errors)
    settled = report.actions["transfer_completed"] + report.actions["transfer_aborted"]
    try:
        committed = list(transfers.filter(status=Status.COMMITTED, committed_at__lt=grace)[:batch_size])
        # Past the grace period a decided transfer can be finished; past its deadline an
        # undecided one is voided.
        pending = list(
            transfers.filter(Q(created_at__lt=grace) | Q(deadline__lt=now), status=Status.PENDING).order_by(
                "created_at"
            )[:batch_size]
        )
        if chosen:
            report.actions["skipped"] += transfers.count() - len(committed) - len(pending)
    except DatabaseError as exc:
        report.errors.append(f"control plane: {exc}")
        return False
    states = steps.leg_states(pending)
    decided = [t for t in pending if LegState.COMMITTED in states.get(t.id, {}).values()]
    steps.finish_forward(committed + decided)
    undecided = [t for t in pending if t.id in states and LegState.COMMITTED not in states[t.id].values()]
    if chosen:
        # Undecided, and their coordinators still have time.
        report.actions["skipped"] += sum(1 for t in undecided if t.deadline >= now)
    steps.abort([t for t in undecided if t.deadline < now], states)
    full = len(committed) == batch_size or len(pending) == batch_size
    progress = report.actions["transfer_completed"] + report.actions["transfer_aborted"] > settled
    return full and progress and not chosen and len(report.errors) == errors


def _expire_approvals(actor: Actor, report: RecoveryReport, now: datetime) -> None:
    """Requests for approval whose hold ended, or is past its deadline: expired, amounts released;
    and holds no request refers to, released."""
    expired = approvals_expire(actor=actor, now=now)
    if expired:
        report.actions["approval_expired"] += expired
    orphaned = holds_orphaned_release(actor=actor, now=now)
    if orphaned:
        report.actions["orphan_hold_released"] += orphaned


def transfers_recover_pass(**options: Any) -> RecoveryReport:
    """One pass of a long-running recovery worker (``recover_transfers --loop``): what Django does
    at every request's boundaries first — a connection that failed and no longer answers (its
    server restarted), or has outlived CONN_MAX_AGE, is closed, so the pass opens a new one instead
    of failing on a dead socket until the process is restarted — then ``transfers_recover``.
    Not for use inside a transaction (closing a connection there breaks it)."""
    close_old_connections()
    return transfers_recover(**options)


def _void_orphan_legs(ledger: str, grace: datetime, steps: _Pass, batch_size: int, after: int) -> int | None:
    """One batch of PREPARED legs older than the grace period, after the leg ``after`` (a primary
    key), whose transfer is ABORTED (voided), COMMITTED (finished forward) or unknown
    (``_orphans_settle``); the others are their coordinators' or the transfers' pass's. Returns the
    last leg's key to go on after, or None when the ledger has no more (or a step failed)."""
    rows = list(
        TransferLeg.objects.using(ledger)
        .filter(state=LegState.PREPARED, created_at__lt=grace, pk__gt=after)
        .order_by("pk")
        .values_list("pk", "transfer_id", "leg")[:batch_size]
    )
    if not rows:
        return None
    legs: list[LegKey] = [(uuid.UUID(str(transfer_id)), leg) for _, transfer_id, leg in rows]
    errors = len(steps.report.errors)
    transfers = Transfer.objects.in_bulk({transfer_id for transfer_id, _ in legs})
    unknown = [key for key in legs if key[0] not in transfers]
    if unknown:
        _orphans_settle(ledger, unknown, steps)
    known = [(transfers[pk], leg) for pk, leg in legs if pk in transfers]
    steps.void(((transfer, leg) for transfer, leg in known if transfer.status == Status.ABORTED), "leg_voided")
    steps.finish_forward(list({t.id: t for t, _ in known if t.status == Status.COMMITTED}.values()))
    return rows[-1][0] if len(rows) == batch_size and len(steps.report.errors) == errors else None


def _orphans_settle(ledger: str, legs: list[LegKey], steps: _Pass) -> None:
    """Prepared legs whose transfer the control plane does not know (lost with a restored backup:
    the ledgers' snapshots and the control plane's are not one cut). The ledgers still hold the
    decision: a leg whose other leg is COMMITTED somewhere was decided and is committed too;
    the others are voided."""
    now = timezone.now()
    ids = sorted({transfer_id for transfer_id, _ in legs})
    rows = recovery_legs_read(ledger, ids)
    decided: set[LegKey] = set()
    for alias in settings.LEDGERS:
        for (transfer_id, leg), row in (rows if alias == ledger else recovery_legs_read(alias, ids)).items():
            if row.state == LegState.COMMITTED:
                decided.add((transfer_id, Leg.CREDIT if leg == Leg.DEBIT else Leg.DEBIT))
    commit = {key: (ENTRY_KIND[rows[key].kind], "") for key in legs if key in decided and key in rows}
    void = [key for key in legs if key not in commit]
    if commit:
        logger.error(
            "recovery: %d legs in %s have no transfer but were decided; committing them: %s",
            len(commit),
            ledger,
            sorted(commit)[:10],
        )
        steps.count("orphan_leg_committed", len(recovery_legs_commit(ledger, commit, now)))
    if void:
        logger.error(
            "recovery: %d legs in %s have no transfer and no decision; voiding them: %s",
            len(void),
            ledger,
            sorted(void)[:10],
        )
        steps.count("orphan_leg_voided", len(recovery_legs_void(ledger, void, now)))
