"""The leg API: each step of one leg of a transfer in its ledger, one transaction each.

A transfer has a debit leg (source ledger) and a credit leg (destination ledger), each a row of
that ledger's recovery table (``TransferLeg``) under the unique key (transfer, leg):

- ``leg_prepare``  — the debit leg PREPARED, its amount held in the account's pending debits;
- ``leg_decide``   — a leg COMMITTED in one commit, posted with its entry: the transfer's decision;
- ``leg_commit``   — PREPARED → COMMITTED, posting what was held: exactly once;
- ``leg_void``     — PREPARED → VOIDED, releasing what was held; or a VOIDED tombstone where the
                     leg was never written, so that a late prepare or decision fails on the key.

``leg_commit_at`` and ``leg_void_at`` do the same from what a ledger alone knows of a leg (its
transfer lost from the control plane). ``leg_step_checked`` runs a step whose account checks may
be deferred into its COMMIT (``transfers.engine.checks.leg_change_checked``). Every form of transfer
(``local``, ``cross``, ``home``) and recovery move legs only through these.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import TypeVar

from django.db import IntegrityError, OperationalError
from django.utils import timezone

from accounts.models import Entry
from bankcore.db import CommitOutcomeUnknown, LockConflictGaveUp, atomic_with_retry
from transfers import ledger_sql
from transfers.engine.checks import (
    ledger_busy,
    leg_change_checked,
    leg_location,
    leg_pending_field,
    leg_refusal_found,
)
from transfers.errors import LedgerUnavailable, TransferRefused, TransferTimedOut
from transfers.ledger_sql import Verdict
from transfers.models import Transfer, TransferLeg

logger = logging.getLogger(__name__)
T = TypeVar("T")

Leg = TransferLeg.Leg
LegState = TransferLeg.State

# The kind of entry each kind of transfer posts.
ENTRY_KIND: dict[str, str] = {
    Transfer.Kind.TRANSFER: Entry.Kind.TRANSFER,
    Transfer.Kind.DEPOSIT: Entry.Kind.DEPOSIT,
    Transfer.Kind.WITHDRAWAL: Entry.Kind.WITHDRAWAL,
    Transfer.Kind.REVERSAL: Entry.Kind.REVERSAL,
}


def leg_prepare(transfer: Transfer) -> None:
    """Phase 1, the debit leg in the source ledger: lock the account, check it, its funds and its
    daily limit, hold the amount in pending debits, write the leg PREPARED. Raises
    ``TransferRefused`` (rolled back, nothing held). A VOIDED tombstone left by recovery makes the
    insert fail on the unique key: the late prepare is refused. Raises ``CommitOutcomeUnknown``
    when the connection failed during the commit itself."""
    leg_step_checked(
        transfer, Leg.DEBIT, lambda: leg_prepare_statements(transfer, Leg.DEBIT), doing="preparing the debit leg"
    )


def leg_prepare_statements(transfer: Transfer, leg: str) -> Verdict | None:
    """Inside the leg's ledger transaction: check the leg's account and hold the amount in its
    pending counter, write the leg PREPARED. A VOIDED tombstone left by recovery makes the insert
    fail on the unique key. Returns the deferred check's verdict (``leg_change_checked``)."""
    now = timezone.now()
    verdict = leg_change_checked(transfer, leg, field=leg_pending_field(leg), now=now)
    _leg_insert(transfer, leg, state=LegState.PREPARED, now=now, verdict=verdict)
    return verdict


def leg_decide(transfer: Transfer, leg: str = Leg.CREDIT) -> None:
    """Phase 2, the decision, in the ledger of the transfer's decision leg (the credit leg, or the
    debit leg when the credit leg was prepared in the control plane's transaction): lock the
    account, check it (a debit: also funds and daily limit), post the amount with its entry and
    write the leg COMMITTED, in one commit. Once it returns, the transfer will complete. Raises
    ``TransferRefused`` when it certainly did not commit (account refused, recovery's tombstone
    already there, deadline passed, ledger down before the commit), and ``CommitOutcomeUnknown``
    when the connection failed during the commit itself: then only recovery can tell, from the
    ledger, which way it went."""
    ledger, pk = leg_location(transfer, leg)

    def decide() -> Verdict | None:
        now = timezone.now()
        verdict = leg_change_checked(transfer, leg, field="posted", now=now)
        # If recovery's tombstone holds the leg's key, this insert fails with the COMMIT's round
        # trip and the whole step rolls back: the balance is untouched.
        _leg_insert(transfer, leg, state=LegState.COMMITTED, now=now, verdict=verdict)
        ledger_sql.entry_insert(
            ledger,
            account_pk=pk,
            amount=-transfer.amount if leg == Leg.DEBIT else transfer.amount,
            transfer_id=transfer.id,
            entry_kind=ENTRY_KIND[transfer.kind],
            description=transfer.reference,
            now=now,
            only_if=_only_if(verdict),
        )
        return verdict

    if timezone.now() >= transfer.deadline:
        # Recovery may be voiding it right now; deciding late would finish it past its deadline.
        raise TransferRefused(TransferTimedOut("The transfer did not reach its decision within its deadline."))
    leg_step_checked(transfer, leg, decide, doing="deciding")


def leg_commit(transfer: Transfer, leg: str) -> bool:
    """Finish: PREPARED → COMMITTED, posting the held amount and writing the entry. Exactly once:
    the conditional update claims the leg, so True means this call did it and False that it was
    already done (or voided, which reconciliation reports). May raise ``OperationalError``."""
    ledger, pk = leg_location(transfer, leg)
    return leg_commit_at(
        ledger=ledger,
        transfer_id=transfer.id,
        leg=leg,
        account_pk=pk,
        amount=transfer.amount,
        kind=transfer.kind,
        description=transfer.reference,
    )


def leg_commit_at(
    *, ledger: str, transfer_id: uuid.UUID, leg: str, account_pk: int, amount: Decimal, kind: str, description: str
) -> bool:
    """``leg_commit`` from what the ledger itself knows of the leg (recovery of a leg whose
    transfer the control plane lost)."""

    def commit() -> bool:
        now = timezone.now()
        if not ledger_sql.leg_transition(
            ledger, transfer_id=transfer_id, leg=leg, to_state=LegState.COMMITTED, now=now
        ):
            return False
        # ``post`` locks the account's row by its update and reads the balance after it; the leg's
        # pending amount is held there, so releasing it cannot break a constraint.
        leg_post(
            ledger,
            leg=leg,
            account_pk=account_pk,
            amount=amount,
            transfer_id=transfer_id,
            kind=kind,
            description=description,
            now=now,
            release_pending=True,
        )
        return True

    return atomic_with_retry(ledger, commit)


def leg_void(transfer: Transfer, leg: str) -> bool:
    """PREPARED → VOIDED, releasing the pending amount; or, if the leg was never prepared, a VOIDED
    tombstone so that a late prepare fails. True if this call changed anything; never undoes a
    COMMITTED leg. May raise ``OperationalError``."""
    ledger, pk = leg_location(transfer, leg)
    return leg_void_at(
        ledger=ledger,
        transfer_id=transfer.id,
        leg=leg,
        account_pk=pk,
        amount=transfer.amount,
        kind=transfer.kind,
        business_date=transfer.business_date,
    )


def leg_void_at(
    *,
    ledger: str,
    transfer_id: uuid.UUID,
    leg: str,
    account_pk: int,
    amount: Decimal,
    kind: str,
    business_date: date,
) -> bool:
    """``leg_void`` from what the ledger itself knows of the leg (recovery of a leg whose transfer
    the control plane lost)."""
    field = leg_pending_field(leg)

    def void() -> bool:
        now = timezone.now()
        if ledger_sql.leg_transition(ledger, transfer_id=transfer_id, leg=leg, to_state=LegState.VOIDED, now=now):
            ledger_sql.pending_add(ledger, account_pk=account_pk, field=field, amount=-amount, now=now)
            return True
        if ledger_sql.leg_exists(ledger, transfer_id=transfer_id, leg=leg):
            return False  # already voided, or committed (which a void must never undo)
        ledger_sql.legs_insert(
            ledger,
            transfer_id=transfer_id,
            legs=[(leg, None)],
            amount=Decimal("0"),
            state=LegState.VOIDED,
            kind=kind,
            business_date=business_date,
            now=now,
        )
        return True

    for _ in range(3):
        try:
            return atomic_with_retry(ledger, void)
        except IntegrityError:
            continue  # a prepare inserted the leg meanwhile: void that instead
    raise RuntimeError(f"could not void leg {transfer_id}/{leg} in {ledger}")


def leg_post(
    ledger: str,
    *,
    leg: str,
    account_pk: int,
    amount: Decimal,
    transfer_id: uuid.UUID,
    kind: str,
    description: str,
    now: datetime,
    release_pending: bool = False,
    only_if: str = "",
) -> None:
    """Inside the leg's ledger transaction: post a leg's amount on its account, with its entry (and
    release what its prepare held)."""
    ledger_sql.post(
        ledger,
        account_pk=account_pk,
        delta=-amount if leg == Leg.DEBIT else amount,
        transfer_id=transfer_id,
        entry_kind=ENTRY_KIND[kind],
        description=description,
        now=now,
        release_pending=leg_pending_field(leg) if release_pending else None,
        only_if=only_if,
    )


def leg_step_checked(transfer: Transfer, leg: str, step: Callable[[], Verdict | None], *, doing: str) -> None:
    """Run a leg's step in its ledger's transaction (``_leg_step``); when its check was deferred and
    refused (nothing of the step was written), raise the refusal the account explains, or, if it
    has none by now (it changed in between), run the step again."""
    ledger, _ = leg_location(transfer, leg)
    for _attempt in range(3):
        verdict = _leg_step(ledger, step, transfer, doing=doing)
        if verdict is None or verdict:
            return
        refused = leg_refusal_found(transfer, leg)
        if refused is not None:
            raise refused
    raise TransferRefused(ledger_busy())


def _leg_step(ledger: str, step: Callable[[], T], transfer: Transfer, *, doing: str) -> T:
    """Run a leg's step (prepare or decide) in its ledger's transaction and return what it
    returns. What certainly left nothing behind becomes the refusal to record
    (``TransferRefused``): recovery's tombstone on the leg's key, a lock it gave up on, a ledger
    that failed before the commit. A commit of unknown outcome (``CommitOutcomeUnknown``)
    propagates: what it means depends on the step."""
    try:
        return atomic_with_retry(ledger, step)
    except IntegrityError:
        raise TransferRefused(TransferTimedOut("The transfer timed out and was voided by recovery.")) from None
    except LockConflictGaveUp:
        raise TransferRefused(ledger_busy()) from None
    except CommitOutcomeUnknown:
        raise
    except OperationalError as exc:
        logger.warning("transfer %s: ledger %s failed while %s: %s", transfer.id, ledger, doing, exc)
        raise TransferRefused(
            LedgerUnavailable(f"Ledger {ledger} did not answer; the transfer was not made.")
        ) from None


def _leg_insert(transfer: Transfer, leg: str, *, state: str, now: datetime, verdict: Verdict | None) -> None:
    """Write one leg of the transfer in its ledger, with the step's verdict (``leg_change_checked``)."""
    ledger, pk = leg_location(transfer, leg)
    ledger_sql.legs_insert(
        ledger,
        transfer_id=transfer.id,
        legs=[(leg, pk)],
        amount=transfer.amount,
        state=state,
        kind=transfer.kind,
        business_date=transfer.business_date,
        now=now,
        only_if=_only_if(verdict),
    )


def _only_if(verdict: Verdict | None) -> str:
    return ledger_sql.VERDICT_OK if verdict is not None else ""
