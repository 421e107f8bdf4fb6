"""Steps 2, 3 and 5 of the batched engine (``transfers.engine.batch``), each in one transaction
per ledger for every item it concerns: prepare in the source ledgers, decide in the destination
ledgers, finish in both. Each step locks the accounts it changes in canonical order, computes every
item's change from what it read under the lock, and writes them in one statement each
(``transfers.batch_sql``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import TypeVar

from django.db import IntegrityError, OperationalError
from django.utils import timezone

from bankcore.db import CommitOutcomeUnknown, LockConflictGaveUp, atomic_with_retry
from bankcore.errors import ApplicationError
from transfers import batch_sql, ledger_sql
from transfers.engine.batch_items import BatchWork
from transfers.engine.checks import account_check, funds_and_limit_check
from transfers.engine.legs import ENTRY_KIND
from transfers.errors import LedgerBusy, LedgerUnavailable, TransferRefused, TransferTimedOut
from transfers.ledger_sql import LockedAccount
from transfers.models import TransferLeg

logger = logging.getLogger(__name__)
T = TypeVar("T")

Leg = TransferLeg.Leg
LegState = TransferLeg.State


def _locked_now(
    account: LockedAccount | None, posted: dict[int, Decimal], pending: dict[int, Decimal]
) -> LockedAccount | None:
    """The locked account as the batch's earlier items in this step left it."""
    if account is None:
        return None
    return replace(account, posted=posted[account.pk], pending_debits=pending[account.pk])


def _leg_row(w: BatchWork, leg: str, pk: int) -> batch_sql.LegRow:
    t = w.transfer
    return batch_sql.LegRow(t.id, leg, pk, t.amount, t.kind, t.business_date)


def _entry_row(w: BatchWork, pk: int, amount: Decimal, balance_after: Decimal) -> batch_sql.EntryRow:
    t = w.transfer
    return batch_sql.EntryRow(pk, amount, balance_after, ENTRY_KIND[t.kind], t.id, t.reference)


def _balances_write(
    ledger: str,
    locked: dict[int, LockedAccount],
    posted: dict[int, Decimal],
    pending: dict[int, Decimal],
    now: datetime,
    credits: dict[int, Decimal] | None = None,
) -> None:
    """One update per account changed by the step: what it did to the posted balance and the
    pending debits (read under the lock) and, ``credits``, the pending credits it added."""
    for pk, account in sorted(locked.items()):
        d_posted, d_pending = posted[pk] - account.posted, pending[pk] - account.pending_debits
        d_credits = (credits or {}).get(pk, Decimal("0.00"))
        if d_posted or d_pending or d_credits:
            batch_sql.account_balances_add(
                ledger, account_pk=pk, posted=d_posted, pending_debits=d_pending, pending_credits=d_credits, now=now
            )


def _step(
    ledger: str,
    group: list[BatchWork],
    work: Callable[[], T],
    *,
    unknown: Callable[[BatchWork], None],
    tombstones: bool = False,
) -> T | None:
    """Run one batched step in its ledger's transaction. When it certainly did not commit, every
    item of the group is refused with the reason (a lock given up on, a ledger down, recovery's
    tombstone); when its commit's outcome is unknown, ``unknown`` says what that means for each.
    ``tombstones``: a leg's key taken (IntegrityError) is raised, for the caller to tell which."""
    try:
        return atomic_with_retry(ledger, work)
    except CommitOutcomeUnknown:
        for w in group:
            unknown(w)
        return None
    except IntegrityError:
        if tombstones:
            raise
        error: ApplicationError = TransferTimedOut("The transfer timed out and was voided by recovery.")
    except LockConflictGaveUp:
        error = LedgerBusy("The account is busy; the transfer was not made.")
    except OperationalError:
        logger.warning("batch: ledger %s failed", ledger)
        error = LedgerUnavailable(f"Ledger {ledger} did not answer; the transfer was not made.")
    for w in group:
        w.error = error
    return None


def prepare_in(ledger: str, group: list[BatchWork]) -> None:
    """Step 2 in one source ledger (see above)."""
    sources = sorted({w.source for w in group})
    pks = sorted({*sources, *(w.destination for w in group if w.made_in_one_ledger)})
    today = group[0].transfer.business_date

    def work() -> dict[BatchWork, ApplicationError]:
        now = timezone.now()
        locked, spent = batch_sql.accounts_lock_and_daily_debits_many(ledger, pks, sources=sources, business_date=today)
        posted = {pk: a.posted for pk, a in locked.items()}
        pending = {pk: a.pending_debits for pk, a in locked.items()}
        refusals: dict[BatchWork, ApplicationError] = {}
        prepared: list[batch_sql.LegRow] = []
        committed: list[batch_sql.LegRow] = []
        entries: list[batch_sql.EntryRow] = []
        for w in group:
            t, src, dst = w.transfer, w.source, w.destination
            try:
                source = account_check(_locked_now(locked.get(src), posted, pending), t, side="source")
                if w.made_in_one_ledger:
                    account_check(_locked_now(locked.get(dst), posted, pending), t, side="destination")
                funds_and_limit_check(source, t, spent_today=spent.get(src, Decimal("0.00")))
            except TransferRefused as refused:
                refusals[w] = refused.error
                continue
            spent[src] = spent.get(src, Decimal("0.00")) + t.amount
            if not w.made_in_one_ledger:
                pending[src] += t.amount
                prepared.append(_leg_row(w, Leg.DEBIT, src))
                continue
            posted[src] -= t.amount
            posted[dst] += t.amount
            committed += [_leg_row(w, Leg.DEBIT, src), _leg_row(w, Leg.CREDIT, dst)]
            entries += [_entry_row(w, src, -t.amount, posted[src]), _entry_row(w, dst, t.amount, posted[dst])]
        if prepared:
            batch_sql.legs_insert_many(ledger, prepared, state=LegState.PREPARED, now=now)
        if committed:
            batch_sql.legs_insert_many(ledger, committed, state=LegState.COMMITTED, now=now)
        if entries:
            batch_sql.entries_insert_many(ledger, entries, now=now)
        _balances_write(ledger, locked, posted, pending, now)
        return refusals

    def unknown(w: BatchWork) -> None:
        # Prepared or not: an item with a leg elsewhere is refused and its leg voided (or found
        # absent) at the finish; one made here outright may have been, and only recovery can tell.
        if w.made_in_one_ledger:
            w.unknown = True
        else:
            w.held = True
            w.error = LedgerUnavailable(f"Ledger {ledger} did not answer; the transfer was not made.")

    refusals = _step(ledger, group, work, unknown=unknown)
    if refusals is None:
        return
    for w in group:
        if w in refusals:
            w.error = refusals[w]
        elif w.made_in_one_ledger:
            w.decided = True
        else:
            w.held = True


def decide_in(ledger: str, group: list[BatchWork]) -> None:
    """Step 3 in one destination ledger: the point of no return of the unlinked items it commits.
    A credit leg recovery's tombstone already holds fails the whole insert: those items are
    refused and the step runs again without them."""
    for _attempt in range(3):
        pending_group = [w for w in group if w.error is None]
        if not pending_group:
            return

        def unknown(w: BatchWork) -> None:
            w.unknown = True  # recovery reads the credit leg: finished forward or voided

        try:
            refusals = _step(
                ledger,
                pending_group,
                partial(_decide_statements, ledger, pending_group),
                unknown=unknown,
                tombstones=True,
            )
        except IntegrityError:
            taken = batch_sql.legs_lock(ledger, [w.transfer.id for w in pending_group], leg=Leg.CREDIT)
            for w in pending_group:
                if w.transfer.id in taken:
                    w.error = TransferTimedOut("The transfer timed out and was voided by recovery.")
            continue
        if refusals is None:
            return
        for w in pending_group:
            if w in refusals:
                w.error = refusals[w]
            elif w.chain is not None:
                w.credit_held = True
            else:
                w.decided = True
        return
    for w in group:
        if w.error is None:
            w.error = LedgerBusy("The account is busy; the transfer was not made.")


def _decide_statements(ledger: str, group: list[BatchWork]) -> dict[BatchWork, ApplicationError]:
    """Step 3's transaction: each credit checked under its account's lock, in canonical order;
    an unlinked item's credit posted with its entry and its leg COMMITTED, a linked item's held in
    pending credits with its leg PREPARED."""
    now = timezone.now()
    locked = ledger_sql.accounts_lock(ledger, sorted({w.destination for w in group}))
    posted = {pk: a.posted for pk, a in locked.items()}
    pending = {pk: a.pending_debits for pk, a in locked.items()}
    credits: dict[int, Decimal] = {}
    refusals: dict[BatchWork, ApplicationError] = {}
    committed: list[batch_sql.LegRow] = []
    prepared: list[batch_sql.LegRow] = []
    entries: list[batch_sql.EntryRow] = []
    for w in group:
        t, dst = w.transfer, w.destination
        if now >= t.deadline:
            refusals[w] = TransferTimedOut("The transfer did not reach its decision within its deadline.")
            continue
        try:
            account_check(locked.get(dst), t, side="destination")
        except TransferRefused as refused:
            refusals[w] = refused.error
            continue
        if w.chain is not None:
            credits[dst] = credits.get(dst, Decimal("0.00")) + t.amount
            prepared.append(_leg_row(w, Leg.CREDIT, dst))
            continue
        posted[dst] += t.amount
        committed.append(_leg_row(w, Leg.CREDIT, dst))
        entries.append(_entry_row(w, dst, t.amount, posted[dst]))
    if committed:
        batch_sql.legs_insert_many(ledger, committed, state=LegState.COMMITTED, now=now)
        batch_sql.entries_insert_many(ledger, entries, now=now)
    if prepared:
        batch_sql.legs_insert_many(ledger, prepared, state=LegState.PREPARED, now=now)
    _balances_write(ledger, locked, posted, pending, now, credits)
    return refusals


def finish_in(ledger: str, group: list[BatchWork], leg: str) -> None:
    """Step 5 in one ledger, for one leg of each item: the decided ones COMMITTED and posted, the
    others VOIDED and released; a leg recovery got to first is left as it is. A ledger that fails
    leaves both to recovery (the decided items marked COMMITTED, the refused ones voided once
    ABORTED)."""
    debit = leg == Leg.DEBIT
    ids = [w.transfer.id for w in group]
    pks = sorted({w.source if debit else w.destination for w in group})

    def work() -> None:
        now = timezone.now()
        states = batch_sql.legs_lock(ledger, ids, leg=leg)
        locked = ledger_sql.accounts_lock(ledger, pks)
        posted = {pk: a.posted for pk, a in locked.items()}
        pending = {pk: a.pending_debits for pk, a in locked.items()}
        credits: dict[int, Decimal] = {}
        commit, void, entries = [], [], []
        for w in group:
            t, pk = w.transfer, w.source if debit else w.destination
            if states.get(t.id) != LegState.PREPARED:
                continue
            if debit:
                pending[pk] -= t.amount
            else:
                credits[pk] = credits.get(pk, Decimal("0.00")) - t.amount
            if w.decided:
                posted[pk] += -t.amount if debit else t.amount
                commit.append(t.id)
                entries.append(_entry_row(w, pk, -t.amount if debit else t.amount, posted[pk]))
            else:
                void.append(t.id)
        if commit:
            batch_sql.legs_transition_many(ledger, commit, leg=leg, to_state=LegState.COMMITTED, now=now)
            batch_sql.entries_insert_many(ledger, entries, now=now)
        if void:
            batch_sql.legs_transition_many(ledger, void, leg=leg, to_state=LegState.VOIDED, now=now)
        _balances_write(ledger, locked, posted, pending, now, credits)

    try:
        atomic_with_retry(ledger, work)
    except OperationalError:
        logger.warning("batch: finishing in ledger %s deferred to recovery", ledger)
        decided = [w.transfer.id for w in group if w.decided and w.chain is None]
        if decided:
            try:
                batch_sql.transfers_mark_committed_many(decided, now=timezone.now())
            except OperationalError:
                logger.warning("batch: the control plane did not take the committed hint")
        for w in group:
            if w.decided:
                w.unknown = True  # left to recovery: it finishes them forward
