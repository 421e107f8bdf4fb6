"""The batched engine: N transfers, any mix of ledgers and directions, through the protocol of
a single transfer in a constant number of commits per ledger involved, each keeping every guarantee
of a transfer made alone (its own idempotency key and replay, its refusals and their codes, limits,
recovery, reconciliation). One item's refusal does not fail the others, unless the caller links
them: an item marked ``linked`` forms one chain with the item after it (TigerBeetle's linked
events), and a chain happens wholly or not at all.

``transfers.services`` exports ``transfers_create_batch``, ``BatchItem`` and ``BatchOutcome``;
``transfers.batch`` records a batch itself (``TransferBatch``) for the bulk API.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial, reduce
from operator import or_
from typing import TypeVar

from django.conf import settings
from django.db import IntegrityError, OperationalError
from django.db.models import Q
from django.utils import timezone

from accounts.errors import AccountNotFound
from accounts.numbers import account_number_parse, account_number_serial
from audit.services import auditlog_entry_created
from bankcore.actors import Actor
from bankcore.db import CommitOutcomeUnknown, LockConflictGaveUp, atomic_with_retry
from bankcore.errors import ApplicationError
from bankcore.faults import fault_point
from bankcore.idempotency import InvalidIdempotencyKey, idempotency_key_clean
from bankcore.metrics import record_transfer
from bankcore.money import currency_parse, money_parse
from transfers import ledger_sql
from transfers.engine.accept import _key_release as transfer_key_release
from transfers.engine.accept import _replay as transfer_replay
from transfers.engine.accept import _request_hash as request_hash
from transfers.engine.accept import business_date_today, reference_clean
from transfers.engine.checks import account_check, funds_and_limit_check
from transfers.engine.legs import ENTRY_KIND
from transfers.engine.outcome import transfer_event, transfer_refusal_error
from transfers.errors import (
    NOT_AN_OUTCOME,
    AmountAboveMaximum,
    LedgerBusy,
    LedgerUnavailable,
    LinkedTransferFailed,
    SameAccount,
    TransferRefused,
    TransferTimedOut,
)
from transfers.ledger_sql import LockedAccount
from transfers.models import Transfer, TransferBatch, TransferLeg

logger = logging.getLogger(__name__)
T = TypeVar("T")

Leg = TransferLeg.Leg
LegState = TransferLeg.State
Status = Transfer.Status

BATCH_MAX_ITEMS = 1000


@dataclass(frozen=True)
class BatchItem:
    source_account: str
    destination_account: str
    amount: Decimal | str
    currency: str | None = None
    reference: str = ""
    idempotency_key: str | None = None  # per item, as transfer_create's
    # Item i linked: i and i + 1 form one chain, which happens wholly or not at all.
    linked: bool = False
    # Who asked for this item, when not the batch's actor: a single transfer coalesced into a batch
    # (``transfers.group_commit``) is made as its own client's (its idempotency keys, its channel)
    # and keeps its own request id and address in the audit trail.
    actor: Actor | None = None


@dataclass
class BatchOutcome:
    # COMPLETED; ABORTED for a recorded refusal; PENDING/COMMITTED when a ledger failed and
    # recovery finishes it; None when the item was refused before it was accepted.
    transfer: Transfer | None
    error: ApplicationError | None  # the refusal, with its stable code; None when it moved
    replayed: bool = False


class BatchTooLarge(ApplicationError):
    code = "batch_too_large"
    title = "Too many items in one batch"
    http_status = 400


def chains(items: Sequence[BatchItem]) -> Iterator[list[int]]:
    """The positions of the items, grouped in chains (an unlinked item is a chain of one). A last
    item marked ``linked`` closes its chain."""
    chain: list[int] = []
    for position, item in enumerate(items):
        chain.append(position)
        if not item.linked:
            yield chain
            chain = []
    if chain:
        yield chain


def transfers_create_batch(
    *,
    actor: Actor,
    items: Sequence[BatchItem],
    kind: str = Transfer.Kind.TRANSFER,
    batch: TransferBatch | None = None,
    refused: Mapping[int, ApplicationError] | None = None,
) -> list[BatchOutcome]:
    """Make every item of ``items``; one outcome per item, in their order. Never raises for one
    item's refusal: it is that item's ``error``. ``batch``: the record the transfers belong to.
    ``refused``: items (by position) the caller refuses before they are accepted (an account the
    client may not debit): they are answered with that error, and fail the chain they are in."""
    if kind != Transfer.Kind.TRANSFER:
        raise ValueError("batches carry transfers between customer accounts only")
    if len(items) > BATCH_MAX_ITEMS:
        raise BatchTooLarge(f"A batch has at most {BATCH_MAX_ITEMS} items; this one has {len(items)}.")
    chain_of: dict[int, int] = {}
    for number, chain in enumerate(chains(items)):
        if len(chain) > 1:
            chain_of.update(dict.fromkeys(chain, number))
    outcomes = _batched(actor, items, chain_of, refused or {}, batch)
    return [outcomes[position] for position in range(len(items))]


# --- the batched engine ---------------------------------------------------------------------------
#
# The items go through the protocol of ``transfers.services`` together, in a constant number of
# commits per ledger whatever their number (docs/architecture.md, "Batches"):
#
#   1. accept   — every item PENDING, in one commit of the control plane (one multi-row INSERT);
#   2. prepare  — per source ledger, one commit: its accounts locked in canonical order, each item
#                 checked in order (funds and daily limit count the batch's earlier items), the
#                 debit legs PREPARED and held; an unlinked item inside that ledger is made there
#                 outright;
#   3. decide   — per destination ledger, one commit: each credit checked; an unlinked item's posted,
#                 its leg COMMITTED (its decision); a linked item's held in pending credits, its leg
#                 PREPARED;
#   4. link     — if the batch has chains: one commit of the control plane deciding every chain whose
#                 items all prepared both legs: its transfers PENDING → COMMITTED together;
#   5. finish   — per ledger, one commit: decided legs COMMITTED and posted, the others' VOIDED and
#                 released (debit legs in the source ledgers, a chain's credit legs in theirs);
#   6. complete — one commit of the control plane: COMPLETED, or ABORTED with each refusal's code.
#
# Each item is at every moment in a state of a single transfer's protocol that recovery finishes or
# voids on its own: an unlinked item is decided once its credit leg is COMMITTED, aborted by a
# tombstone on it otherwise; a linked item has both legs prepared, and its decision is its
# transfer's COMMITTED status (the form recovery settles as "decided in the control plane": past
# its deadline a PENDING one is aborted there, and a COMMITTED one has both legs committed).
# Refusals found before the accept are answered and not recorded, as ``transfer_create``'s are.


@dataclass(eq=False)
class _Work:
    position: int
    transfer: Transfer
    actor: Actor  # the item's, else the batch's
    chain: int | None = None  # the linked chain it is in
    error: ApplicationError | None = None  # refused; recorded ABORTED at complete
    held: bool = False  # its debit leg is (or may be) PREPARED
    credit_held: bool = False  # a linked item's credit leg is PREPARED
    decided: bool = False  # decided: its credit leg COMMITTED, or its chain COMMITTED
    unknown: bool = False  # a commit's outcome unknown: left to recovery

    @property
    def source(self) -> int:
        return account_number_serial(self.transfer.source_account)

    @property
    def destination(self) -> int:
        return account_number_serial(self.transfer.destination_account)

    @property
    def made_in_one_ledger(self) -> bool:
        """An unlinked item inside one ledger: made in its prepare commit."""
        return not self.transfer.is_cross_ledger and self.chain is None


def _chain_error(cause: ApplicationError) -> ApplicationError:
    """What the other items of a chain one item of which was refused with ``cause`` are refused
    with: an outage's own code (not an outcome: a retry under the keys makes the chain anew), else
    ``linked_transfer_failed``."""
    if cause.code in NOT_AN_OUTCOME:
        return type(cause)(cause.detail)
    return LinkedTransferFailed("Another transfer of its linked chain was refused; nothing of the chain was made.")


def _chains_fail(work: list[_Work]) -> None:
    """Refuse every item of a chain in which one item is refused (or left to recovery: then the
    whole chain is, undecided, for recovery to abort)."""
    causes: dict[int, ApplicationError] = {}
    unknown: set[int] = set()
    for w in work:
        if w.chain is None:
            continue
        if w.unknown:
            unknown.add(w.chain)
        elif w.error is not None and not isinstance(w.error, LinkedTransferFailed):
            causes.setdefault(w.chain, w.error)
    for w in work:
        if w.chain in unknown:
            w.unknown = True
        elif w.chain in causes and w.error is None:
            w.error = _chain_error(causes[w.chain])


def _batched(
    actor: Actor,
    items: Sequence[BatchItem],
    chain_of: dict[int, int],
    refused: Mapping[int, ApplicationError],
    batch: TransferBatch | None,
) -> dict[int, BatchOutcome]:
    outcomes: dict[int, BatchOutcome] = {}
    started = time.monotonic()
    work = _accept(actor, items, chain_of, refused, batch, outcomes)
    if not work:
        return outcomes
    fault_point("after_batch_accept")
    for ledger, group in _grouped(work, lambda w: w.transfer.source_ledger):
        _prepare_in(ledger, group)
    _chains_fail(work)
    fault_point("after_batch_prepare")
    deciding = [w for w in work if w.held and w.error is None and not w.unknown]
    for ledger, group in _grouped(deciding, lambda w: w.transfer.destination_ledger):
        _decide_in(ledger, group)
    _chains_fail(work)
    fault_point("after_batch_decide")
    linked = [w for w in work if w.chain is not None and w.credit_held and w.error is None and not w.unknown]
    if linked:
        _chains_decide(linked)
        _chains_fail(work)
        fault_point("after_batch_link")
    for ledger, group in _grouped([w for w in work if w.held and not w.unknown], lambda w: w.transfer.source_ledger):
        _finish_in(ledger, group, Leg.DEBIT)
    crediting = [w for w in work if w.credit_held and not w.unknown]
    for ledger, group in _grouped(crediting, lambda w: w.transfer.destination_ledger):
        _finish_in(ledger, group, Leg.CREDIT)
    fault_point("after_batch_finish")
    _complete_all(work)
    for w in work:
        transfer = w.transfer
        transfer.replayed = False
        if transfer.is_final:
            record_transfer(
                kind=transfer.kind,
                outcome=transfer.failure_code or transfer.status,
                cross_ledger=transfer.is_cross_ledger,
                seconds=time.monotonic() - started,
            )
        error = transfer_refusal_error(transfer)
        if error is None and w.unknown and transfer.status == Status.PENDING:
            error = LedgerUnavailable(
                "A database did not answer; the transfer will be completed or voided by recovery.",
                extra={"transfer_id": str(transfer.id)},
            )
        outcomes[w.position] = BatchOutcome(transfer, error)
    return outcomes


def _grouped(work: list[_Work], key: Callable[[_Work], str]) -> list[tuple[str, list[_Work]]]:
    groups: dict[str, list[_Work]] = {}
    for w in work:
        groups.setdefault(key(w), []).append(w)
    return sorted(groups.items())


def _new_transfer(
    actor: Actor, item: BatchItem, batch: TransferBatch | None, position: int, now: datetime, today: date
) -> Transfer:
    """The item as a transfer to accept, checked as ``transfer_create`` checks its arguments (the
    same refusals, raised; the same request hash, so that the item's key replays alike)."""
    amount = money_parse(item.amount)
    currency = currency_parse(item.currency) if item.currency is not None else None
    reference = reference_clean(item.reference)
    key = idempotency_key_clean(item.idempotency_key)
    src = account_number_parse(item.source_account)
    dst = account_number_parse(item.destination_account)
    if src.number == dst.number:
        raise SameAccount("The source and destination accounts are the same.")
    if amount > settings.MAX_TRANSFER_AMOUNT:
        raise AmountAboveMaximum(f"At most {settings.MAX_TRANSFER_AMOUNT} can be moved at once.")
    return Transfer(
        id=uuid.uuid4(),
        kind=Transfer.Kind.TRANSFER,
        status=Status.PENDING,
        source_account=src.number,
        source_ledger=src.ledger,
        destination_account=dst.number,
        destination_ledger=dst.ledger,
        amount=amount,
        currency=currency or "",  # "": its source account's, read before the accept
        reference=reference,
        client_id=actor.client_id,
        idempotency_key=key,
        request_hash=request_hash(
            kind=Transfer.Kind.TRANSFER,
            source=src.number,
            destination=dst.number,
            amount=amount,
            currency=currency,
            reference=reference,
            reversal_of=None,
        ),
        business_date=today,
        deadline=now + timedelta(seconds=settings.TRANSACTION_TIMEOUT),
        channel=actor.channel,
        created_by_id=actor.user_id,
        created_at=now,
        batch=batch,
        batch_position=position if batch is not None else None,
    )


def _accept(
    actor: Actor,
    items: Sequence[BatchItem],
    chain_of: dict[int, int],
    refused: Mapping[int, ApplicationError],
    batch: TransferBatch | None,
    outcomes: dict[int, BatchOutcome],
) -> list[_Work]:
    """Step 1: check every item, answer the replays, refuse the chains one item of which is
    refused already, and store the rest PENDING in one commit. A key another request takes
    meanwhile fails the insert: the replays are read again and the accept retried."""
    now, today = timezone.now(), business_date_today()
    work: list[_Work] = []
    keys: set[tuple[str, str]] = set()  # (client, idempotency key)
    for position, item in enumerate(items):
        by = item.actor or actor
        try:
            if position in refused:
                raise refused[position]
            transfer = _new_transfer(by, item, batch, position, now, today)
            key = (transfer.client_id, transfer.idempotency_key) if transfer.idempotency_key else None
            if key is not None and key in keys:
                raise InvalidIdempotencyKey("An idempotency key is given to more than one item of the batch.")
        except ApplicationError as refusal:
            outcomes[position] = BatchOutcome(None, refusal)
            continue
        if key is not None:
            keys.add(key)
        work.append(_Work(position, transfer, by, chain=chain_of.get(position)))
    work = _currencies_resolve(work, outcomes)
    for _attempt in range(3):
        work = _replays_answer(work, keys, outcomes)
        work = _chains_refused_before(work, chain_of, outcomes)
        if not work:
            return work
        try:
            atomic_with_retry("default", partial(_accept_statements, work))
            return work
        except IntegrityError:
            continue
        except CommitOutcomeUnknown:
            error: ApplicationError = LedgerUnavailable(
                "A database did not answer while the transfers were being recorded; a replay with the same "
                "idempotency keys tells whether they were made."
            )
        except OperationalError:
            error = LedgerUnavailable("The control-plane database did not answer; nothing was moved.")
        for w in work:
            outcomes[w.position] = BatchOutcome(None, error)
        return []
    for w in work:
        outcomes[w.position] = BatchOutcome(
            None, LedgerBusy("Other requests with these idempotency keys are being made; try again.")
        )
    return []


def _accept_statements(work: list[_Work]) -> None:
    ledger_sql.transfers_insert_many([w.transfer for w in work])
    for w in work:
        auditlog_entry_created(w.transfer, actor=w.actor)


def _chains_refused_before(
    work: list[_Work], chain_of: dict[int, int], outcomes: dict[int, BatchOutcome]
) -> list[_Work]:
    """The items of a chain one item of which was refused before the accept (or replays a
    refusal) are refused too, before the accept."""
    causes: dict[int, ApplicationError] = {}
    for position, outcome in outcomes.items():
        chain = chain_of.get(position)
        if chain is not None and outcome.error is not None and not isinstance(outcome.error, LinkedTransferFailed):
            causes.setdefault(chain, outcome.error)
    kept = []
    for w in work:
        if w.chain in causes:
            outcomes[w.position] = BatchOutcome(None, _chain_error(causes[w.chain]))
        else:
            kept.append(w)
    return kept


def _currencies_resolve(work: list[_Work], outcomes: dict[int, BatchOutcome]) -> list[_Work]:
    """An item that names no currency takes its source account's, read in one query per ledger;
    a source that does not exist is refused before the accept, as ``transfer_create`` refuses it."""
    needed = [w for w in work if not w.transfer.currency]
    found: dict[tuple[str, int], tuple[str, str]] = {}
    for ledger, group in _grouped(needed, lambda w: w.transfer.source_ledger):
        for pk, account in ledger_sql.accounts_currency(ledger, sorted({w.source for w in group})).items():
            found[(ledger, pk)] = account
    kept = []
    for w in work:
        transfer = w.transfer
        if not transfer.currency:
            source = found.get((transfer.source_ledger, w.source))
            if source is None or source[0] != transfer.source_account:
                outcomes[w.position] = BatchOutcome(None, AccountNotFound(f"No account {transfer.source_account}."))
                continue
            transfer.currency = source[1]
        kept.append(w)
    return kept


def _replays_answer(work: list[_Work], keys: set[tuple[str, str]], outcomes: dict[int, BatchOutcome]) -> list[_Work]:
    """Items whose key was used before: the first outcome answered again (or the key given up by
    a transfer an outage aborted, ``transfer_key_release``), in one query for the batch."""
    if not keys:
        return work
    by_client: dict[str, list[str]] = {}
    for client, name in keys:
        by_client.setdefault(client, []).append(name)
    either = reduce(or_, (Q(client_id=client, idempotency_key__in=names) for client, names in by_client.items()))
    existing = {(t.client_id, t.idempotency_key): t for t in Transfer.objects.filter(either)}
    kept = []
    for w in work:
        earlier = existing.get((w.transfer.client_id, w.transfer.idempotency_key))
        if earlier is None or transfer_key_release(earlier, w.transfer.request_hash):
            kept.append(w)
            continue
        try:
            replayed = transfer_replay(earlier, w.transfer.request_hash)
        except ApplicationError as error:
            outcomes[w.position] = BatchOutcome(
                getattr(error, "transfer", None), error, bool(getattr(error, "replayed", False))
            )
        else:
            outcomes[w.position] = BatchOutcome(replayed, None, True)
    return kept


def _locked_now(account: LockedAccount | None, posted: dict[int, Decimal], pending: dict[int, Decimal]):  # type: ignore[no-untyped-def]
    """The locked account as the batch's earlier items in this step left it."""
    if account is None:
        return None
    return replace(account, posted=posted[account.pk], pending_debits=pending[account.pk])


def _leg_row(w: _Work, leg: str, pk: int) -> ledger_sql.LegRow:
    t = w.transfer
    return ledger_sql.LegRow(t.id, leg, pk, t.amount, t.kind, t.business_date)


def _entry_row(w: _Work, pk: int, amount: Decimal, balance_after: Decimal) -> ledger_sql.EntryRow:
    t = w.transfer
    return ledger_sql.EntryRow(pk, amount, balance_after, ENTRY_KIND[t.kind], t.id, t.reference)


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
            ledger_sql.account_balances_add(
                ledger, account_pk=pk, posted=d_posted, pending_debits=d_pending, pending_credits=d_credits, now=now
            )


def _step(
    ledger: str,
    group: list[_Work],
    work: Callable[[], T],
    *,
    unknown: Callable[[_Work], None],
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


def _prepare_in(ledger: str, group: list[_Work]) -> None:
    """Step 2 in one source ledger (see above)."""
    sources = sorted({w.source for w in group})
    pks = sorted({*sources, *(w.destination for w in group if w.made_in_one_ledger)})
    today = group[0].transfer.business_date

    def work() -> dict[_Work, ApplicationError]:
        now = timezone.now()
        locked, spent = ledger_sql.accounts_lock_and_daily_debits_many(
            ledger, pks, sources=sources, business_date=today
        )
        posted = {pk: a.posted for pk, a in locked.items()}
        pending = {pk: a.pending_debits for pk, a in locked.items()}
        refusals: dict[_Work, ApplicationError] = {}
        prepared: list[ledger_sql.LegRow] = []
        committed: list[ledger_sql.LegRow] = []
        entries: list[ledger_sql.EntryRow] = []
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
            ledger_sql.legs_insert_many(ledger, prepared, state=LegState.PREPARED, now=now)
        if committed:
            ledger_sql.legs_insert_many(ledger, committed, state=LegState.COMMITTED, now=now)
        if entries:
            ledger_sql.entries_insert_many(ledger, entries, now=now)
        _balances_write(ledger, locked, posted, pending, now)
        return refusals

    def unknown(w: _Work) -> None:
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


def _decide_in(ledger: str, group: list[_Work]) -> None:
    """Step 3 in one destination ledger: the point of no return of the unlinked items it commits.
    A credit leg recovery's tombstone already holds fails the whole insert: those items are
    refused and the step runs again without them."""
    for _attempt in range(3):
        pending_group = [w for w in group if w.error is None]
        if not pending_group:
            return

        def unknown(w: _Work) -> None:
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
            taken = ledger_sql.legs_lock(ledger, [w.transfer.id for w in pending_group], leg=Leg.CREDIT)
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


def _decide_statements(ledger: str, group: list[_Work]) -> dict[_Work, ApplicationError]:
    """Step 3's transaction: each credit checked under its account's lock, in canonical order;
    an unlinked item's credit posted with its entry and its leg COMMITTED, a linked item's held in
    pending credits with its leg PREPARED."""
    now = timezone.now()
    locked = ledger_sql.accounts_lock(ledger, sorted({w.destination for w in group}))
    posted = {pk: a.posted for pk, a in locked.items()}
    pending = {pk: a.pending_debits for pk, a in locked.items()}
    credits: dict[int, Decimal] = {}
    refusals: dict[_Work, ApplicationError] = {}
    committed: list[ledger_sql.LegRow] = []
    prepared: list[ledger_sql.LegRow] = []
    entries: list[ledger_sql.EntryRow] = []
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
        ledger_sql.legs_insert_many(ledger, committed, state=LegState.COMMITTED, now=now)
        ledger_sql.entries_insert_many(ledger, entries, now=now)
    if prepared:
        ledger_sql.legs_insert_many(ledger, prepared, state=LegState.PREPARED, now=now)
    _balances_write(ledger, locked, posted, pending, now, credits)
    return refusals


def _chains_decide(linked: list[_Work]) -> None:
    """Step 4: every chain whose items all prepared both legs decided at once, in one commit of
    the control plane: its transfers PENDING → COMMITTED together, or, if recovery aborted one of
    them meanwhile (past its deadline), none; that chain is then refused."""
    by_chain: dict[int, list[_Work]] = {}
    for w in linked:
        by_chain.setdefault(w.chain, []).append(w)  # type: ignore[arg-type]

    def decide() -> set[int]:
        now = timezone.now()
        open_ids = ledger_sql.transfers_lock_open([w.transfer.id for w in linked])
        decided = {chain for chain, members in by_chain.items() if all(w.transfer.id in open_ids for w in members)}
        ids = [w.transfer.id for w in linked if w.chain in decided]
        if ids:
            ledger_sql.transfers_mark_committed_many(ids, now=now)
        return decided

    try:
        decided = atomic_with_retry("default", decide)
    except CommitOutcomeUnknown:
        for w in linked:
            w.unknown = True  # COMMITTED or not: recovery finishes or aborts each chain as a whole
        return
    except OperationalError:
        for w in linked:
            w.error = LedgerUnavailable("The control-plane database did not answer; the transfer was not made.")
        return
    for w in linked:
        if w.chain in decided:
            w.decided = True
            w.transfer.status = Status.COMMITTED
        else:
            w.error = TransferTimedOut("The transfer timed out and was voided by recovery.")


def _finish_in(ledger: str, group: list[_Work], leg: str) -> None:
    """Step 5 in one ledger, for one leg of each item: the decided ones COMMITTED and posted, the
    others VOIDED and released; a leg recovery got to first is left as it is. A ledger that fails
    leaves both to recovery (the decided items marked COMMITTED, the refused ones voided once
    ABORTED)."""
    debit = leg == Leg.DEBIT
    ids = [w.transfer.id for w in group]
    pks = sorted({w.source if debit else w.destination for w in group})

    def work() -> None:
        now = timezone.now()
        states = ledger_sql.legs_lock(ledger, ids, leg=leg)
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
            ledger_sql.legs_transition_many(ledger, commit, leg=leg, to_state=LegState.COMMITTED, now=now)
            ledger_sql.entries_insert_many(ledger, entries, now=now)
        if void:
            ledger_sql.legs_transition_many(ledger, void, leg=leg, to_state=LegState.VOIDED, now=now)
        _balances_write(ledger, locked, posted, pending, now, credits)

    try:
        atomic_with_retry(ledger, work)
    except OperationalError:
        logger.warning("batch: finishing in ledger %s deferred to recovery", ledger)
        decided = [w.transfer.id for w in group if w.decided and w.chain is None]
        if decided:
            try:
                ledger_sql.transfers_mark_committed_many(decided, now=timezone.now())
            except OperationalError:
                logger.warning("batch: the control plane did not take the committed hint")
        for w in group:
            if w.decided:
                w.unknown = True  # left to recovery: it finishes them forward


def _complete_all(work: list[_Work]) -> None:
    """Step 6: every item made COMPLETED and every refusal ABORTED with its code, with their audit
    events, in one commit of the control plane; one recovery finished first is left as it is."""
    final = [w for w in work if not w.unknown and (w.decided or w.error is not None)]
    if not final:
        return

    def complete() -> tuple[set[uuid.UUID], datetime]:
        now = timezone.now()
        open_ids = ledger_sql.transfers_lock_open([w.transfer.id for w in final])
        done = [w for w in final if w.transfer.id in open_ids and w.error is None]
        if done:
            ledger_sql.transfers_mark_completed_many([w.transfer.id for w in done], now=now)
        for w in final:
            if w.transfer.id not in open_ids:
                continue
            if w.error is None:
                transfer_event(w.transfer, w.actor, "transfer.completed")
            else:
                ledger_sql.transfer_mark_aborted(
                    w.transfer.id, failure_code=w.error.code, failure_detail=w.error.detail[:500], now=now
                )
                transfer_event(w.transfer, w.actor, "transfer.aborted", failure_code=w.error.code)
        return open_ids, now

    try:
        open_ids, now = atomic_with_retry("default", complete)
    except OperationalError:
        logger.warning("batch: the control plane failed at complete; recovery finishes the batch")
        for w in final:
            w.unknown = True
        return
    for w in final:
        t = w.transfer
        if t.id not in open_ids:
            t.refresh_from_db()
        elif w.error is None:
            t.status, t.finished_at, t.committed_at = Status.COMPLETED, now, t.committed_at or now
        else:
            t.status, t.finished_at = Status.ABORTED, now
            t.failure_code, t.failure_detail = w.error.code, w.error.detail[:500]
