"""Recovery: finish forward what was decided, void what was not, exactly once.

Run by Celery beat every few seconds and by ``manage.py recover_transfers``. Every step is a
conditional update or guarded by a unique key, so it is safe to run twice, or from two workers at
once, or beside live coordinators:

- COMMITTED transfers → commit their legs, then COMPLETED;
- PENDING transfers past their deadline → ABORTED (cross-ledger: by the control-plane decision;
  one ledger: by a tombstone in the ledger, which is where that decision lives) and their legs voided;
- PREPARED legs whose transfer is unknown or ABORTED → voided.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from bankcore.actors import Actor, Channel
from bankcore.metrics import record_recovery
from transfers.errors import TransferTimedOut
from transfers.models import Transfer, TransferLeg
from transfers.services import _complete, _decide_abort, _leg_void_at, leg_commit, leg_void

logger = logging.getLogger(__name__)

Leg = TransferLeg.Leg
LegState = TransferLeg.State
Status = Transfer.Status

# A live coordinator finishes a committed transfer within milliseconds; recovery waits this long
# before stepping in, so that the two rarely contend (they would still be correct if they did).
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


def transfer_finish_forward(transfer: Transfer, actor: Actor, report: RecoveryReport) -> None:
    for leg in (Leg.DEBIT, Leg.CREDIT):
        if leg_commit(transfer, leg):
            report.actions["leg_committed"] += 1
    _complete(transfer, actor)
    if transfer.status == Status.COMPLETED:
        report.actions["transfer_completed"] += 1


def _recover_pending(transfer: Transfer, actor: Actor, report: RecoveryReport) -> None:
    if transfer.is_cross_ledger:
        _decide_abort(transfer, actor, _timed_out(), legs_to_void=[Leg.DEBIT, Leg.CREDIT])
        if transfer.status == Status.ABORTED:
            report.actions["transfer_aborted"] += 1
        elif transfer.status == Status.COMMITTED:  # the coordinator decided first
            transfer_finish_forward(transfer, actor, report)
        return
    # One ledger: the local atomic block is the decision. Either its legs are there (it committed)
    # or our tombstones get there first and it never will.
    ledger = transfer.source_ledger
    try:
        with transaction.atomic(using=ledger):
            TransferLeg.objects.using(ledger).bulk_create(
                [
                    TransferLeg(
                        transfer_id=transfer.id,
                        leg=leg,
                        account=None,
                        amount=0,
                        state=LegState.VOIDED,
                        kind=transfer.kind,
                        business_date=transfer.business_date,
                    )
                    for leg in (Leg.DEBIT, Leg.CREDIT)
                ]
            )
    except IntegrityError:
        states = set(TransferLeg.objects.using(ledger).filter(transfer_id=transfer.id).values_list("state", flat=True))
        if states == {LegState.COMMITTED}:
            _complete(transfer, actor)
            report.actions["transfer_completed"] += 1
            return
    _decide_abort(transfer, actor, _timed_out())
    report.actions["transfer_aborted"] += 1


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
    transfers = Transfer.objects.all() if transfer_ids is None else Transfer.objects.filter(pk__in=transfer_ids)

    def attempt(what: str, step, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            step(*args)
        except DatabaseError as exc:
            logger.warning("recovery: %s failed: %s", what, exc)
            report.errors.append(f"{what}: {exc}")

    try:
        committed = list(transfers.filter(status=Status.COMMITTED, committed_at__lt=grace)[:batch_size])
        pending = list(transfers.filter(status=Status.PENDING, deadline__lt=now)[:batch_size])
        if transfer_ids is not None:
            report.actions["skipped"] += transfers.count() - len(committed) - len(pending)
    except DatabaseError as exc:
        report.errors.append(f"control plane: {exc}")
        return report
    for transfer in committed:
        attempt(f"finish {transfer.id}", transfer_finish_forward, transfer, actor, report)
    for transfer in pending:
        attempt(f"abort {transfer.id}", _recover_pending, transfer, actor, report)

    if transfer_ids is None:
        for ledger in settings.LEDGERS:
            attempt(f"orphan legs in {ledger}", _void_orphan_legs, ledger, grace, actor, report, batch_size)
    record_recovery(report.actions)
    return report


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
            logger.error("recovery: leg %s/%s in %s has no transfer; voiding it", transfer_id, leg, ledger)
            _orphan_void(ledger, transfer_id, leg)
            report.actions["orphan_leg_voided"] += 1
        elif transfer.status == Status.ABORTED:
            if leg_void(transfer, leg):
                report.actions["leg_voided"] += 1
        elif transfer.status == Status.COMMITTED:
            transfer_finish_forward(transfer, actor, report)


def _orphan_void(ledger: str, transfer_id: uuid.UUID, leg: str) -> None:
    """A leg whose transfer the control plane does not know (lost with a restored backup)."""
    row = TransferLeg.objects.using(ledger).get(transfer_id=transfer_id, leg=leg)
    _leg_void_at(
        ledger=ledger,
        transfer_id=transfer_id,
        leg=leg,
        account_pk=row.account_id or 0,
        amount=row.amount,
        kind=row.kind,
        business_date=row.business_date,
    )
