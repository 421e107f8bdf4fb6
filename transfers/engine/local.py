"""A transfer inside one ledger: both legs written COMMITTED and both amounts posted in one of
that ledger's transactions, then the transfer COMPLETED in the control plane (two commits; one,
when the ledger shares the control plane's server: ``transfers.engine.home``)."""

from __future__ import annotations

import logging

from django.db import IntegrityError, OperationalError
from django.utils import timezone

from bankcore.actors import Actor
from bankcore.db import LockConflictGaveUp, atomic_with_retry
from bankcore.faults import fault_point
from transfers import ledger_sql
from transfers.engine.checks import (
    account_check,
    accounts_lock_for_debit,
    funds_and_limit_check,
    ledger_busy,
    leg_location,
)
from transfers.engine.legs import ENTRY_KIND
from transfers.engine.outcome import transfer_abort_decide, transfer_complete
from transfers.errors import LedgerUnavailable, TransferRefused, TransferTimedOut
from transfers.models import Transfer, TransferLeg

logger = logging.getLogger(__name__)

Leg = TransferLeg.Leg
LegState = TransferLeg.State


def local_statements(transfer: Transfer) -> None:
    """A transfer inside one ledger, inside that ledger's transaction: lock both accounts in
    canonical order, check them, the funds and the daily limit, write both legs COMMITTED and post
    both amounts. Raises ``TransferRefused``."""
    ledger, source_pk = leg_location(transfer, Leg.DEBIT)
    _, destination_pk = leg_location(transfer, Leg.CREDIT)
    locked, spent_today = accounts_lock_for_debit(ledger, [source_pk, destination_pk], transfer, source_pk=source_pk)
    source = account_check(locked.get(source_pk), transfer, side="source")
    destination = account_check(locked.get(destination_pk), transfer, side="destination")
    funds_and_limit_check(source, transfer, spent_today=spent_today)
    now = timezone.now()
    ledger_sql.legs_insert(
        ledger,
        transfer_id=transfer.id,
        legs=[(Leg.DEBIT, source.pk), (Leg.CREDIT, destination.pk)],
        amount=transfer.amount,
        state=LegState.COMMITTED,
        kind=transfer.kind,
        business_date=transfer.business_date,
        now=now,
    )
    for account, delta in ((source, -transfer.amount), (destination, transfer.amount)):
        ledger_sql.post(
            ledger,
            account_pk=account.pk,
            delta=delta,
            transfer_id=transfer.id,
            entry_kind=ENTRY_KIND[transfer.kind],
            description=transfer.reference,
            now=now,
        )


def local_execute(transfer: Transfer, actor: Actor) -> None:
    """Carry out an accepted transfer inside one ledger: COMPLETED, or ABORTED with the refusal.
    Raises ``LedgerUnavailable`` when the ledger failed, perhaps after committing: the transfer
    stays PENDING for recovery, which reads its legs."""
    ledger = transfer.source_ledger

    try:
        atomic_with_retry(ledger, lambda: local_statements(transfer))
    except TransferRefused as refused:
        transfer_abort_decide(transfer, actor, refused.error)
        return
    except IntegrityError:
        # Recovery's tombstone won the race for the legs' unique key.
        transfer_abort_decide(transfer, actor, TransferTimedOut("The transfer timed out and was voided by recovery."))
        return
    except LockConflictGaveUp:
        transfer_abort_decide(transfer, actor, ledger_busy())
        return
    except OperationalError as exc:
        # The ledger is down, perhaps after committing: only recovery can tell. It stays PENDING.
        logger.warning("transfer %s: ledger %s failed during a local transfer: %s", transfer.id, ledger, exc)
        raise LedgerUnavailable(
            "A ledger database did not answer; the transfer will be completed or voided by recovery.",
            extra={"transfer_id": str(transfer.id)},
        ) from None
    fault_point("after_local_commit")
    transfer_complete(transfer, actor)
