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
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import Q
from django.utils import timezone

from bankcore.actors import Actor, Channel
from bankcore.faults import fault_point
from bankcore.metrics import record_recovery, record_transfer
from transfers.approvals import approvals_expire, holds_orphaned_release
from transfers.engine.legs import leg_commit, leg_commit_at, leg_void, leg_void_at
from transfers.engine.outcome import transfer_abort_decide, transfer_complete
from transfers.errors import TransferTimedOut
from transfers.models import Transfer, TransferLeg

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


def _leg_states(transfer: Transfer) -> dict[str, str | None]:
    """The state of each of the transfer's legs in its ledger (None: not there): where its decision
    lives. A local transfer's legs are both in one ledger and commit together."""
    states: dict[str, str | None] = {}
    for leg, ledger in ((Leg.DEBIT, transfer.source_ledger), (Leg.CREDIT, transfer.destination_ledger)):
        states[leg] = (
            TransferLeg.objects.using(ledger)
            .filter(transfer_id=transfer.id, leg=leg)
            .values_list("state", flat=True)
            .first()
        )
    return states


def _finished_by_recovery(transfer: Transfer, report: RecoveryReport, action: str) -> None:
    """Count a transfer recovery brought to its end, as the engine counts those it ends itself
    (the coordinator that left it unfinished counted nothing)."""
    report.actions[action] += 1
    record_transfer(
        kind=transfer.kind,
        outcome=transfer.failure_code or transfer.status,
        cross_ledger=transfer.is_cross_ledger,
        seconds=max(0.0, ((transfer.finished_at or timezone.now()) - transfer.created_at).total_seconds()),
    )


def transfer_finish_forward(transfer: Transfer, actor: Actor, report: RecoveryReport) -> None:
    for leg in (Leg.DEBIT, Leg.CREDIT):
        if leg_commit(transfer, leg):
            report.actions["leg_committed"] += 1
    if transfer_complete(transfer, actor):
        _finished_by_recovery(transfer, report, "transfer_completed")


def _recover_pending(
    transfer: Transfer, actor: Actor, report: RecoveryReport, now: datetime, count_skipped: bool
) -> None:
    states = _leg_states(transfer)
    if LegState.COMMITTED in states.values():
        transfer_finish_forward(transfer, actor, report)
        return
    if transfer.deadline >= now:
        # Undecided, and its coordinator still has time.
        if count_skipped:
            report.actions["skipped"] += 1
        return
    # The abort decision: a tombstone under the key of each leg not written yet — the decision's
    # (the credit leg, or the debit leg of a transfer prepared at the control plane's server), and
    # one never prepared. It never undoes a commit: if the coordinator's decision got there
    # first, the re-read below sees it.
    missing = [leg for leg in (Leg.CREDIT, Leg.DEBIT) if states[leg] is None]
    if missing:
        for leg in missing if transfer.is_cross_ledger else [Leg.CREDIT]:
            leg_void(transfer, leg)
        if LegState.COMMITTED in _leg_states(transfer).values():
            transfer_finish_forward(transfer, actor, report)
            return
    fault_point("after_tombstone")
    # A local transfer's legs commit together, except a hold's (``transfer_hold``): its debit leg
    # alone is prepared, and is released here.
    held: list[str] = [Leg.DEBIT] if states[Leg.DEBIT] == LegState.PREPARED else []
    if transfer_abort_decide(
        transfer, actor, _timed_out(), legs_to_void=[Leg.DEBIT, Leg.CREDIT] if transfer.is_cross_ledger else held
    ):
        _finished_by_recovery(transfer, report, "transfer_aborted")


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
    batch_size: int = 500,
    transfer_ids: list[str] | None = None,
) -> RecoveryReport:
    """One recovery pass over the control plane and every ledger. Never raises for one stuck
    transfer or one ledger that is down: it records the error and carries on with the rest.

    With ``transfer_ids`` (the back office's "run recovery" on stuck transfers), only those
    transfers, by the same rules; the ones not due (final, or within their deadline or grace) are
    counted as ``skipped``, and the ledgers are not swept for orphan legs."""
    actor = actor or Actor.system(Channel.TASK, "recovery")
    now = now or timezone.now()
    grace = now - timedelta(seconds=grace_seconds)
    report = RecoveryReport()
    if transfer_ids is None:
        transfers = Transfer.objects.all()
    else:
        # An id that is no UUID names no transfer: left out, as an unknown one finds none (it made
        # the query raise ValidationError, a 500 in the back office).
        transfers = Transfer.objects.filter(pk__in=[pk for pk in map(_uuid_or_none, transfer_ids) if pk is not None])

    def attempt(what: str, step: Callable[..., None], *args: object) -> None:
        try:
            step(*args)
        except DatabaseError as exc:
            logger.warning("recovery: %s failed: %s", what, exc)
            report.errors.append(f"{what}: {exc}")

    try:
        committed = list(transfers.filter(status=Status.COMMITTED, committed_at__lt=grace)[:batch_size])
        # Past the grace period a decided transfer can be finished; past its deadline an
        # undecided one is voided.
        pending = list(
            transfers.filter(Q(created_at__lt=grace) | Q(deadline__lt=now), status=Status.PENDING).order_by(
                "created_at"
            )[:batch_size]
        )
        if transfer_ids is not None:
            report.actions["skipped"] += transfers.count() - len(committed) - len(pending)
    except DatabaseError as exc:
        report.errors.append(f"control plane: {exc}")
        return report
    for transfer in committed:
        attempt(f"finish {transfer.id}", transfer_finish_forward, transfer, actor, report)
    for transfer in pending:
        attempt(f"settle {transfer.id}", _recover_pending, transfer, actor, report, now, transfer_ids is not None)

    if transfer_ids is None:
        for ledger in settings.LEDGERS:
            attempt(f"orphan legs in {ledger}", _void_orphan_legs, ledger, grace, actor, report, batch_size)
        attempt("expired approvals", _expire_approvals, actor, report, now)
    record_recovery(report.actions)
    return report


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


def _void_orphan_legs(ledger: str, grace: datetime, actor: Actor, report: RecoveryReport, batch_size: int) -> None:
    legs = list(
        TransferLeg.objects.using(ledger)
        .filter(state=LegState.PREPARED, created_at__lt=grace)
        .values_list("transfer_id", "leg")[:batch_size]
    )
    if not legs:
        return
    transfers = Transfer.objects.in_bulk({transfer_id for transfer_id, _ in legs})
    for transfer_id, leg in legs:
        transfer = transfers.get(transfer_id)
        if transfer is None:
            if _orphan_settle(ledger, transfer_id, leg):
                report.actions["orphan_leg_committed"] += 1
            else:
                report.actions["orphan_leg_voided"] += 1
        elif transfer.status == Status.ABORTED:
            if leg_void(transfer, leg):
                report.actions["leg_voided"] += 1
        elif transfer.status == Status.COMMITTED:
            transfer_finish_forward(transfer, actor, report)


def _orphan_settle(ledger: str, transfer_id: uuid.UUID, leg: str) -> bool:
    """A prepared leg whose transfer the control plane does not know (it was lost with a restored
    backup: the ledgers' snapshots and the control plane's are not one cut). The ledgers still
    hold the decision: if the other leg is COMMITTED somewhere, the transfer was decided and this
    leg is committed too (True); otherwise it is voided."""
    row = TransferLeg.objects.using(ledger).get(transfer_id=transfer_id, leg=leg)
    other = Leg.CREDIT if leg == Leg.DEBIT else Leg.DEBIT
    decided = any(
        TransferLeg.objects.using(alias).filter(transfer_id=transfer_id, leg=other, state=LegState.COMMITTED).exists()
        for alias in settings.LEDGERS
    )
    if decided and row.account_id is not None:  # a tombstone has no account and nothing to commit
        logger.error(
            "recovery: leg %s/%s in %s has no transfer but was decided; committing it", transfer_id, leg, ledger
        )
        leg_commit_at(
            ledger=ledger,
            transfer_id=transfer_id,
            leg=leg,
            account_pk=row.account_id,
            amount=row.amount,
            kind=row.kind,
            description="",
        )
        return True
    logger.error("recovery: leg %s/%s in %s has no transfer and no decision; voiding it", transfer_id, leg, ledger)
    leg_void_at(
        ledger=ledger,
        transfer_id=transfer_id,
        leg=leg,
        account_pk=row.account_id or 0,
        amount=row.amount,
        kind=row.kind,
        business_date=row.business_date,
    )
    return False
