"""The transfer engine: the one way money moves (API, admin, commands and tasks all call here).

Inside one ledger a transfer is one local atomic block. Across ledgers it follows a two-phase
protocol with each ledger's recovery table (``TransferLeg``), the decision merged into the credit
leg's commit (docs/architecture.md):

1. accept     — validate, claim the idempotency key, store the transfer PENDING (``default``)
2. prepare    — the debit leg, one atomic block in the source ledger: lock the account, check it,
                its funds and daily limit, hold the amount in pending debits, write the leg PREPARED
3. decide     — the credit leg, one atomic block in the destination ledger: lock the account,
                check it, post the credit and write the leg COMMITTED. That commit is the point of
                no return. Recovery decides the other way by a VOIDED tombstone under the same
                unique key, so exactly one of the two can ever exist.
4. finish     — the debit leg PREPARED → COMMITTED: posts the held amount, writes the entry; a
                conditional update that must change one row: exactly once.
5. complete   — PENDING → COMPLETED (``default``)

So: a transfer is decided if and only if its credit leg is COMMITTED in the destination ledger
(for a local transfer, too: both legs commit in one block). The control plane's COMMITTED status is
only a hint, written when finishing had to be left to recovery.

Five durable commits (accept, prepare, decide, finish, complete), and the refusals found in the
source ledger (funds, limit, frozen source) never touch the destination.

When one of the two ledgers is a database on the control plane's own server (the designed
topology: DB1 holds ``bank_core`` too), the steps on that server share transactions and a
cross-ledger transfer takes three commits (see "with the control plane's server" below): accept
with that *home* leg prepared; the other leg decided, COMMITTED in one commit (the credit, or the
debit when the credit is the home leg); the home leg finished with the transfer COMPLETED. The
rule stays: decided once a leg is COMMITTED; recovery's tombstone goes on the leg never prepared.

A named fault point (``bankcore.faults``) sits between every two steps. Whatever a crash leaves
behind, ``transfers.recovery`` finishes forward (credit leg committed) or voids (undecided past its
deadline).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import unicodedata
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, OperationalError, transaction
from django.utils import timezone

from accounts.errors import AccountClosed, AccountFrozen, AccountNotFound, InternalAccount
from accounts.models import Account, Entry
from accounts.numbers import account_number_parse, account_number_serial
from accounts.selectors import account_get
from accounts.services import account_open, opening_deposit_key, opening_deposit_parse
from audit.services import audit_event_record, auditlog_entry_created
from bankcore.actors import Actor
from bankcore.db import CommitOutcomeUnknown, LockConflictGaveUp, atomic_with_retry, batching, same_server
from bankcore.errors import ApplicationError
from bankcore.faults import fault_point
from bankcore.idempotency import idempotency_key_clean
from bankcore.metrics import record_transfer
from bankcore.money import currency_parse, money_parse
from transfers import ledger_sql
from transfers.errors import (
    NOT_AN_OUTCOME,
    RECORDED_REFUSALS,
    AmountAboveMaximum,
    CurrencyMismatch,
    DailyLimitExceeded,
    IdempotencyKeyReused,
    InsufficientFunds,
    InvalidReference,
    LedgerBusy,
    LedgerUnavailable,
    SameAccount,
    TransferAlreadyReversed,
    TransferNotFound,
    TransferNotReversible,
    TransferRefused,
    TransferTimedOut,
)
from transfers.ledger_sql import LockedAccount, Verdict
from transfers.models import Transfer, TransferLeg

logger = logging.getLogger(__name__)
T = TypeVar("T")

Leg = TransferLeg.Leg
LegState = TransferLeg.State
Status = Transfer.Status

REFERENCE_MAX_LENGTH = 140
ENTRY_KIND: dict[str, str] = {
    Transfer.Kind.TRANSFER: Entry.Kind.TRANSFER,
    Transfer.Kind.DEPOSIT: Entry.Kind.DEPOSIT,
    Transfer.Kind.WITHDRAWAL: Entry.Kind.WITHDRAWAL,
    Transfer.Kind.REVERSAL: Entry.Kind.REVERSAL,
}


def business_date_today():  # type: ignore[no-untyped-def]
    return timezone.localdate(timezone=ZoneInfo(settings.BUSINESS_TIME_ZONE))


# --- public services ------------------------------------------------------------------------------


def transfer_create(
    *,
    actor: Actor,
    source_account: str,
    destination_account: str,
    amount: Decimal | str,
    currency: str | None = None,
    reference: str = "",
    idempotency_key: str | None = None,
) -> Transfer:
    """Move ``amount`` from one account to another, in one ledger or across two.

    Returns the transfer, COMPLETED — or COMMITTED/PENDING when a ledger failed mid-way, in which
    case recovery finishes it. ``transfer.replayed`` is True when the idempotency key was seen
    before. Raises, changing nothing: ``InvalidAmount``, ``InvalidCurrency``,
    ``InvalidAccountNumber``, ``SameAccount``, ``AmountAboveMaximum``, ``IdempotencyKeyReused``.
    Raises after recording the transfer as ABORTED (so a replay answers the same): the errors in
    ``transfers.errors.RECORDED_REFUSALS`` (funds, daily limit, account state, currency…); the
    exception's ``transfer`` attribute is the aborted transfer.
    """
    return _transfer_submit(
        actor=actor,
        kind=Transfer.Kind.TRANSFER,
        source=source_account,
        destination=destination_account,
        amount=amount,
        currency=currency,
        reference=reference,
        idempotency_key=idempotency_key,
    )


def transfer_cash_movement(
    *,
    actor: Actor,
    kind: str,
    number: str,
    amount: Decimal | str,
    reference: str = "",
    idempotency_key: str | None = None,
) -> Transfer:
    """A cash deposit (cash account → ``number``) or withdrawal (``number`` → cash account) in
    the account's own ledger. Same refusals as ``transfer_create``."""
    from accounts.services import cash_account_ensure

    # Refuse a malformed or too large amount before the cash account of a new currency is made:
    # a refused call changes nothing.
    if money_parse(amount) > settings.MAX_TRANSFER_AMOUNT:
        raise AmountAboveMaximum(f"At most {settings.MAX_TRANSFER_AMOUNT} can be moved at once.")
    account = account_get(number=number)
    cash = cash_account_ensure(ledger=account.ledger, currency=account.currency)
    source, destination = (cash, account) if kind == Transfer.Kind.DEPOSIT else (account, cash)
    return _transfer_submit(
        actor=actor,
        kind=kind,
        source=str(source.number),
        destination=str(destination.number),
        amount=amount,
        currency=account.currency,
        reference=reference,
        idempotency_key=idempotency_key,
    )


def account_open_with_deposit(
    *,
    actor: Actor,
    ledger: str,
    holder: str,
    opening_deposit: Decimal | str | None,
    currency: str | None = None,
    allow_overdraft: bool = False,
    idempotency_key: str | None = None,
) -> Account:
    """``account_open``, then ``opening_deposit`` (if not None) booked as a cash deposit: a
    transfer of its own, committed after the account. The deposit is refused (``InvalidAmount``,
    ``AmountAboveMaximum``) before the account is opened. With ``idempotency_key``, the same
    opening submitted again gets the first account back, ``replayed`` set, and its deposit is
    booked once (``opening_deposit_key``). Raises what ``account_open`` refuses before anything is
    written, and whatever else the deposit refuses (frozen cash account, ledger busy…) after the
    account exists."""
    if opening_deposit is not None:
        opening_deposit = opening_deposit_parse(opening_deposit)
    account = account_open(
        actor=actor,
        ledger=ledger,
        holder=holder,
        currency=currency,
        allow_overdraft=allow_overdraft,
        idempotency_key=idempotency_key,
    )
    if opening_deposit is not None:
        key = idempotency_key_clean(idempotency_key)
        transfer_cash_movement(
            actor=actor,
            kind=Transfer.Kind.DEPOSIT,
            number=str(account.number),
            amount=opening_deposit,
            reference="Opening deposit",
            idempotency_key=opening_deposit_key(key) if key is not None else None,
        )
        account.refresh_from_db(using=ledger)
    return account


def transfer_reverse(
    *, actor: Actor, transfer_id: uuid.UUID | str, reference: str = "", idempotency_key: str | None = None
) -> Transfer:
    """Move a completed transfer's amount back, as a new transfer linked to it. At most once per
    transfer (an aborted reversal may be retried). Raises ``TransferNotFound``,
    ``TransferNotReversible`` (not completed, or itself a reversal), ``TransferAlreadyReversed``,
    and, recorded on the aborted reversal, ``InsufficientFunds`` when the money is no longer there."""
    try:
        original = Transfer.objects.get(pk=transfer_id)
    except (Transfer.DoesNotExist, ValueError, ValidationError, DatabaseError):
        raise TransferNotFound(f"No transfer {transfer_id}.") from None
    return _transfer_submit(
        actor=actor,
        kind=Transfer.Kind.REVERSAL,
        source=original.destination_account,
        destination=original.source_account,
        amount=original.amount,
        currency=original.currency,
        reference=reference or f"Reversal of {original.id}",
        idempotency_key=idempotency_key,
        reversal_of=original,
    )


def transfer_hold(
    *,
    actor: Actor,
    kind: str,
    source_account: str,
    destination_account: str,
    amount: Decimal | str,
    currency: str | None = None,
    reference: str = "",
    idempotency_key: str | None = None,
    until: datetime,
) -> Transfer:
    """Accept a movement and hold its amount on the source account until ``until``: the debit leg
    PREPARED, the amount in the account's pending debits (what a movement waiting for a second pair
    of eyes keeps aside). The source is checked now, under its row lock, as for any transfer (state,
    currency, funds, daily limit). Returns the transfer, PENDING with its deadline at ``until``:
    ``transfer_held_execute`` moves the money, ``transfer_hold_cancel`` releases it, and recovery
    releases it once the deadline has passed. Same refusals as ``transfer_create``."""
    return _transfer_submit(
        actor=actor,
        kind=kind,
        source=source_account,
        destination=destination_account,
        amount=amount,
        currency=currency,
        reference=reference,
        idempotency_key=idempotency_key,
        hold_until=until,
    )


def transfer_held_execute(*, actor: Actor, transfer: Transfer) -> Transfer:
    """Move the money a hold keeps (``transfer_hold``): the credit leg decided, the debit leg
    finished, the transfer COMPLETED (COMMITTED if finishing was left to recovery). A transfer
    already finished is returned as it is (or its refusal raised). Raises, recorded on the aborted
    transfer with the hold released: the destination's refusals and ``TransferTimedOut`` (past the
    hold's deadline). Raises ``LedgerUnavailable`` or ``LedgerBusy`` leaving the hold in place, to
    be executed again."""
    transfer.refresh_from_db()
    if transfer.status != Status.PENDING:
        error = transfer_refusal_error(transfer)
        if error is not None:
            raise error
        return transfer
    try:
        leg_decide(transfer)
    except TransferRefused as refused:
        if isinstance(refused.error, LedgerUnavailable | LedgerBusy) and timezone.now() < transfer.deadline:
            raise refused.error from None
        _decide_abort(transfer, actor, refused.error, legs_to_void=[Leg.DEBIT])
        error = transfer_refusal_error(transfer)
        raise (error or refused.error) from None
    except CommitOutcomeUnknown:
        raise LedgerUnavailable(
            f"Ledger {transfer.destination_ledger} did not answer; recovery completes or voids the transfer.",
            extra={"transfer_id": str(transfer.id)},
        ) from None
    fault_point("after_decide_credit")
    try:
        leg_commit(transfer, Leg.DEBIT)
    except (OperationalError, LockConflictGaveUp):
        logger.warning("transfer %s: decided, finishing the debit leg deferred to recovery", transfer.id)
        _mark_committed(transfer)
        return transfer
    _complete(transfer, actor)
    return transfer


def transfer_hold_abort(*, actor: Actor, transfer: Transfer, error: ApplicationError) -> bool:
    """Decide a hold ABORTED with ``error`` as its reason (``default`` only: callable inside the
    caller's own transaction, so that the decision commits with whatever caused it). True if this
    call aborted it. Its debit leg is released by ``transfer_hold_release`` after the commit, or by
    recovery, which voids the prepared legs of aborted transfers."""
    return _abort_record(transfer, actor, error)


def transfer_hold_release(*, transfer: Transfer) -> None:
    """Void an aborted hold's debit leg, releasing its pending amount; a ledger that does not
    answer leaves it to recovery."""
    try:
        leg_void(transfer, Leg.DEBIT)
    except (OperationalError, LockConflictGaveUp):
        logger.warning("transfer %s: releasing the hold deferred to recovery", transfer.id)


def transfer_refusal_error(transfer: Transfer) -> ApplicationError | None:
    """The error an ABORTED transfer was refused with, for the doors to render."""
    if transfer.status != Status.ABORTED:
        return None
    error_class = RECORDED_REFUSALS.get(transfer.failure_code, TransferTimedOut)
    error = error_class(transfer.failure_detail or None, extra={"transfer_id": str(transfer.id)})
    error.transfer = transfer
    return error


# --- accept ---------------------------------------------------------------------------------------


def text_is_visible(text: str) -> bool:
    """Printable, or a space of any width (a Chinese input method types U+3000): nothing invisible
    that would change how a line of it reads (bidi overrides, zero-width characters, controls).
    The rule of a transfer's reference and of a reason a supervisor gives."""
    return all(ch.isprintable() or unicodedata.category(ch) == "Zs" for ch in text)


def _reference_clean(reference: object) -> str:
    if reference is None:
        return ""
    if not isinstance(reference, str):
        raise InvalidReference("The reference must be text.")
    if len(reference) > REFERENCE_MAX_LENGTH:
        raise InvalidReference(f"The reference has at most {REFERENCE_MAX_LENGTH} characters.")
    if not text_is_visible(reference):
        raise InvalidReference("The reference contains invisible or control characters.")
    return reference


def _request_hash(**fields: object) -> str:
    canonical = json.dumps({k: str(v) if v is not None else None for k, v in fields.items()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(existing: Transfer, request_hash: str) -> Transfer:
    if existing.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "This idempotency key was already used for a different request.",
            extra={"transfer_id": str(existing.id)},
        )
    existing.replayed = True
    error = transfer_refusal_error(existing)
    if error is not None:
        error.replayed = True
        raise error
    return existing


def _key_release(existing: Transfer, request_hash: str) -> bool:
    """An outage is not an outcome: when the transfer holding a key was aborted for a reason of the
    moment (``NOT_AN_OUTCOME``: a server down, a lock given up on, its deadline missed), nothing was
    moved, and the same request retried under the key is carried out as a new transfer. The
    aborted one gives the key up (a conditional update: of two retries racing, one insert takes the
    key, the other replays it). False — replay it — for anything else: a refusal, a transfer that
    moved money or may still, another request's key. Raises ``OperationalError`` when a ledger
    the aborted transfer's legs live in does not answer (the retry is then refused as unavailable,
    to be retried again)."""
    if (
        existing.request_hash != request_hash
        or existing.status != Status.ABORTED
        or existing.failure_code not in NOT_AN_OUTCOME
    ):
        return False
    if existing.is_cross_ledger:
        # What the aborted transfer may still hold (a void its coordinator could not finish, left
        # to recovery) is released first: the retry must find the account as if it was never
        # tried, not refuse it for funds the first attempt holds. Raises while a ledger is down.
        for leg in (Leg.DEBIT, Leg.CREDIT):
            leg_void(existing, leg)
    released = Transfer.objects.filter(
        pk=existing.pk, status=Status.ABORTED, idempotency_key=existing.idempotency_key
    ).update(idempotency_key=None)
    if released:
        logger.info("transfer %s (%s): idempotency key released for a retry", existing.id, existing.failure_code)
    return True


def _transfer_submit(
    *,
    actor: Actor,
    kind: str,
    source: str,
    destination: str,
    amount: Decimal | str,
    currency: str | None,
    reference: str,
    idempotency_key: str | None,
    reversal_of: Transfer | None = None,
    hold_until: datetime | None = None,
) -> Transfer:
    amount = money_parse(amount)
    if currency is not None:
        currency = currency_parse(currency)
    reference = _reference_clean(reference)
    key = idempotency_key_clean(idempotency_key)
    src = account_number_parse(source)
    dst = account_number_parse(destination)
    if src.number == dst.number:
        raise SameAccount("The source and destination accounts are the same.")
    if kind != Transfer.Kind.REVERSAL and amount > settings.MAX_TRANSFER_AMOUNT:
        raise AmountAboveMaximum(f"At most {settings.MAX_TRANSFER_AMOUNT} can be moved at once.")
    request_hash = _request_hash(
        kind=kind,
        source=src.number,
        destination=dst.number,
        amount=amount,
        currency=currency,
        reference=reference,
        reversal_of=reversal_of.pk if reversal_of else None,
        **({"held": True} if hold_until is not None else {}),
    )
    client_id = actor.client_id
    if key is not None and reversal_of is not None:
        # A reversal checks its original before inserting; a replay must answer before that check
        # (which a completed reversal would fail). Other kinds find a replay by the unique key.
        existing = Transfer.objects.filter(client_id=client_id, idempotency_key=key).first()
        if existing is not None and not _key_release(existing, request_hash):
            return _replay(existing, request_hash)
    if currency is None:
        currency = account_get(number=src.number).currency

    now = timezone.now()
    transfer = Transfer(
        id=uuid.uuid4(),
        kind=kind,
        status=Status.PENDING,
        source_account=src.number,
        source_ledger=src.ledger,
        destination_account=dst.number,
        destination_ledger=dst.ledger,
        amount=amount,
        currency=currency,
        reference=reference,
        client_id=client_id,
        idempotency_key=key,
        request_hash=request_hash,
        reversal_of=reversal_of,
        business_date=business_date_today(),
        deadline=hold_until or now + timedelta(seconds=settings.TRANSACTION_TIMEOUT),
        channel=actor.channel,
        created_by_id=actor.user_id,
        created_at=now,
    )

    def accept() -> None:
        if reversal_of is not None:
            _reversal_claim(reversal_of)
        ledger_sql.transfer_insert(transfer)
        auditlog_entry_created(transfer, actor=actor)

    # A hold stays prepared for hours: its leg is prepared in its ledger's own transaction.
    home = None if hold_until is not None else _home_leg(transfer)
    started = time.monotonic()
    try:
        for _attempt in range(3):
            # What an attempt that lost the key to another request left on the transfer is undone.
            transfer.status, transfer.committed_at, transfer.finished_at = Status.PENDING, None, None
            transfer.failure_code, transfer.failure_detail = "", ""
            try:
                if home is None:
                    atomic_with_retry("default", accept)
                else:
                    _accept_at_home(transfer, actor, accept, home)
                break
            except IntegrityError:
                if key is None:
                    raise
                # The key is taken: the winner's transfer is the answer — unless it was aborted
                # by an outage, which gives the key up to this request (``_key_release``).
                existing = Transfer.objects.filter(client_id=client_id, idempotency_key=key).first()
                if existing is not None and not _key_release(existing, request_hash):
                    return _replay(existing, request_hash)
        else:
            raise LedgerBusy("Other requests with this idempotency key are being made; try again.")
    except CommitOutcomeUnknown:
        logger.warning("transfer %s: the control plane's server failed while committing the accept", transfer.id)
        # Recorded or not is unknown: a local transfer at home may even be COMPLETED, a cross-ledger
        # one PENDING (recovery voids it past its deadline). A replay tells.
        raise LedgerUnavailable(
            "A database did not answer while the transfer was being recorded; a replay with the same "
            "idempotency key tells whether it was made.",
            extra={"transfer_id": str(transfer.id)},
        ) from None
    except OperationalError:
        logger.warning("transfer: control-plane database failed at accept")
        raise LedgerUnavailable("The control-plane database did not answer; nothing was moved.") from None

    try:
        if transfer.is_final:
            pass  # refused at home, or a local transfer done in the accept's own commit
        elif home is not None:
            fault_point("after_accept_prepare")
            _execute_from_home(transfer, actor, home)
        else:
            fault_point("after_accept")
            if hold_until is not None:
                _prepare_debit(transfer, actor)
            elif transfer.is_cross_ledger:
                _execute_cross_ledger(transfer, actor)
            else:
                _execute_local(transfer, actor)
    except OperationalError:
        # The control plane went away mid-transfer; recovery settles it once it is back, and a
        # replay with the same idempotency key then answers with the outcome.
        logger.warning("transfer %s: control-plane database failed", transfer.id)
        raise LedgerUnavailable(
            "A database did not answer; the transfer will be completed or voided by recovery.",
            extra={"transfer_id": str(transfer.id)},
        ) from None
    transfer.replayed = False
    if transfer.is_final:  # one left to recovery is counted when recovery ends it
        record_transfer(
            kind=transfer.kind,
            outcome=transfer.failure_code or transfer.status,
            cross_ledger=transfer.is_cross_ledger,
            seconds=time.monotonic() - started,
        )
    error = transfer_refusal_error(transfer)
    if error is not None:
        error.replayed = False
        raise error
    return transfer


def _reversal_claim(original: Transfer) -> None:
    """Inside the accept transaction: lock the original, refuse a second live reversal."""
    locked = ledger_sql.transfer_lock_for_reversal(original.pk)
    if locked is None:
        raise TransferNotFound(f"No transfer {original.pk}.")
    kind, status, reversed_already = locked
    if kind == Transfer.Kind.REVERSAL:
        raise TransferNotReversible("A reversal cannot itself be reversed.")
    if status != Status.COMPLETED:
        raise TransferNotReversible(f"Only completed transfers can be reversed; this one is {status}.")
    if reversed_already:
        raise TransferAlreadyReversed("This transfer has already been reversed.")


# --- checks made under the account's row lock -----------------------------------------------------


def _check_account(account: LockedAccount | None, transfer: Transfer, *, side: str) -> LockedAccount:
    number = transfer.source_account if side == "source" else transfer.destination_account
    if account is None or account.number != number:
        raise TransferRefused(AccountNotFound(f"The {side} account {number} does not exist."))
    if transfer.kind == Transfer.Kind.TRANSFER and account.kind != Account.Kind.CUSTOMER:
        # The ledgers' cash accounts move only by cash deposits and withdrawals (and their reversals).
        raise TransferRefused(
            InternalAccount(f"The {side} account {number} is a ledger's internal account, not a customer's.")
        )
    if account.status == Account.Status.FROZEN:
        raise TransferRefused(AccountFrozen(f"The {side} account {number} is frozen."))
    if account.status == Account.Status.CLOSED:
        raise TransferRefused(AccountClosed(f"The {side} account {number} is closed."))
    if account.currency != transfer.currency:
        raise TransferRefused(
            CurrencyMismatch(f"The {side} account {number} holds {account.currency}, not {transfer.currency}.")
        )
    return account


def _lock_for_debit(
    ledger: str, pks: list[int], transfer: Transfer, *, source_pk: int
) -> tuple[dict[int, LockedAccount], Decimal]:
    """Lock the accounts; for a transfer, also read what the source moved today (its daily limit),
    in the same round trip."""
    if transfer.kind != Transfer.Kind.TRANSFER:
        return ledger_sql.accounts_lock(ledger, pks), Decimal("0.00")
    return ledger_sql.accounts_lock_and_daily_debits(
        ledger, pks, account_pk=source_pk, business_date=transfer.business_date
    )


def _check_funds_and_limit(account: LockedAccount, transfer: Transfer, *, spent_today: Decimal) -> None:
    if not account.allow_overdraft and account.available < transfer.amount:
        raise TransferRefused(InsufficientFunds(f"Account {account.number} has {account.available} available."))
    _check_daily_limit(account.number, account.kind, transfer, spent_today=spent_today)


def _check_daily_limit(number: str, account_kind: str | None, transfer: Transfer, *, spent_today: Decimal) -> None:
    if transfer.kind != Transfer.Kind.TRANSFER or account_kind != Account.Kind.CUSTOMER:
        return
    # Read under the account's row lock: every debit leg of this account is written under it too.
    if spent_today + transfer.amount > settings.DAILY_TRANSFER_LIMIT:
        raise TransferRefused(
            DailyLimitExceeded(
                f"Account {number} has moved {spent_today} today; the daily limit is {settings.DAILY_TRANSFER_LIMIT}."
            )
        )


# --- one ledger -----------------------------------------------------------------------------------


def _local_statements(transfer: Transfer) -> None:
    """A transfer inside one ledger, inside that ledger's transaction: lock both accounts in
    canonical order, check them, the funds and the daily limit, write both legs COMMITTED and post
    both amounts."""
    ledger, source_pk = _leg_location(transfer, Leg.DEBIT)
    _, destination_pk = _leg_location(transfer, Leg.CREDIT)
    locked, spent_today = _lock_for_debit(ledger, [source_pk, destination_pk], transfer, source_pk=source_pk)
    source = _check_account(locked.get(source_pk), transfer, side="source")
    destination = _check_account(locked.get(destination_pk), transfer, side="destination")
    _check_funds_and_limit(source, transfer, spent_today=spent_today)
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


def _execute_local(transfer: Transfer, actor: Actor) -> None:
    ledger = transfer.source_ledger

    try:
        atomic_with_retry(ledger, lambda: _local_statements(transfer))
    except TransferRefused as refused:
        _decide_abort(transfer, actor, refused.error)
        return
    except IntegrityError:
        # Recovery's tombstone won the race for the legs' unique key.
        _decide_abort(transfer, actor, TransferTimedOut("The transfer timed out and was voided by recovery."))
        return
    except LockConflictGaveUp:
        _decide_abort(transfer, actor, _busy())
        return
    except OperationalError as exc:
        # The ledger is down, perhaps after committing: only recovery can tell. It stays PENDING.
        logger.warning("transfer %s: ledger %s failed during a local transfer: %s", transfer.id, ledger, exc)
        raise LedgerUnavailable(
            "A ledger database did not answer; the transfer will be completed or voided by recovery.",
            extra={"transfer_id": str(transfer.id)},
        ) from None
    fault_point("after_local_commit")
    _complete(transfer, actor)


# --- across ledgers -------------------------------------------------------------------------------


def _pending_field(leg: str) -> str:
    """The counter a leg's amount is held in while it is PREPARED."""
    return "pending_debits" if leg == Leg.DEBIT else "pending_credits"


def _busy() -> LedgerBusy:
    return LedgerBusy("The account is busy; the transfer was not made.")


def _leg_location(transfer: Transfer, leg: str) -> tuple[str, int]:
    """(ledger alias, account pk) of one leg, from what the transfer stored when its numbers were
    parsed and routed at submit."""
    if leg == Leg.DEBIT:
        return transfer.source_ledger, account_number_serial(transfer.source_account)
    return transfer.destination_ledger, account_number_serial(transfer.destination_account)


def _lock_and_check(transfer: Transfer, leg: str) -> LockedAccount:
    """Inside the leg's ledger transaction: lock the leg's account and check it; for the debit,
    also its funds and daily limit (read in the same round trip as the lock)."""
    ledger, pk = _leg_location(transfer, leg)
    if leg == Leg.CREDIT:
        return _check_account(ledger_sql.accounts_lock(ledger, [pk]).get(pk), transfer, side="destination")
    locked, spent_today = _lock_for_debit(ledger, [pk], transfer, source_pk=pk)
    account = _check_account(locked.get(pk), transfer, side="source")
    _check_funds_and_limit(account, transfer, spent_today=spent_today)
    return account


def _change_checked(transfer: Transfer, leg: str, *, field: str, now: datetime) -> Verdict | None:
    """Inside the leg's ledger transaction: apply the leg's amount to its account's ``field`` (hold
    it in a pending counter, or post it) by the conditional update that is also the check of the
    account and, for the debit, of its funds (``ledger_sql.account_change_checked``); then the daily
    limit of a customer's debit, read under the row lock the update took. Raises
    ``TransferRefused``. Why an update changed nothing is found out under the row lock by the same
    checks in Python (``_lock_and_check``), which raise the refusal; if nothing is wrong by then
    (the account changed in between), the change applies under that lock.

    In a batched transaction (MySQL) the checks are SQL instead, the same ones
    (``ledger_sql.account_change_checked_deferred``): it returns their ``Verdict``, the step's
    writes carry ``only_if=VERDICT_OK`` and the step goes in one round trip with its COMMIT;
    ``_checked_step`` explains a refusal afterwards with the Python checks. Elsewhere (SQLite) it
    checks at once and returns None."""
    ledger, pk = _leg_location(transfer, leg)
    debit = leg == Leg.DEBIT
    number = transfer.source_account if debit else transfer.destination_account
    daily = transfer.business_date if debit and transfer.kind == Transfer.Kind.TRANSFER else None
    arguments: dict[str, Any] = {
        "account_pk": pk,
        "number": number,
        "currency": transfer.currency,
        "field": field,
        "delta": -transfer.amount if debit and field == "posted" else transfer.amount,
        "now": now,
        "funds": transfer.amount if debit else None,
        "customer_only": transfer.kind == Transfer.Kind.TRANSFER,
        "daily_debits_on": daily,
    }
    if batching(ledger):
        # Nothing is read back before the COMMIT: the step goes in one round trip, its writes
        # conditional on the checks' verdict (``_checked_step`` reads it afterwards).
        limit = settings.DAILY_TRANSFER_LIMIT if daily is not None else None
        return ledger_sql.account_change_checked_deferred(ledger, **arguments, daily_limit=limit)

    def change() -> tuple[bool, str | None, Decimal]:
        return ledger_sql.account_change_checked(ledger, **arguments)

    changed, kind, spent_today = change()
    if not changed:
        _lock_and_check(transfer, leg)
        changed, kind, spent_today = change()
        if not changed:
            raise RuntimeError(f"account {number} passed its checks under the lock but its update changed nothing")
    if daily is not None:
        _check_daily_limit(number, kind, transfer, spent_today=spent_today)
    return None


def _only_if(verdict: Verdict | None) -> str:
    return ledger_sql.VERDICT_OK if verdict is not None else ""


def _refusal_found(transfer: Transfer, leg: str) -> TransferRefused | None:
    """Why the leg's account refused a deferred check, found under its row lock by the Python
    checks (the refusal path only); None if nothing is wrong with it by now."""
    ledger, _ = _leg_location(transfer, leg)
    try:
        atomic_with_retry(ledger, lambda: _lock_and_check(transfer, leg))
    except TransferRefused as refused:
        return refused
    except LockConflictGaveUp:
        return TransferRefused(_busy())
    return None


def _checked_step(transfer: Transfer, leg: str, step: Callable[[], Verdict | None], *, doing: str) -> None:
    """Run a leg's step (``_leg_step``); when its check was deferred and refused (nothing of the
    step was written), raise the refusal the account explains, or, if it has none by now (it
    changed in between), run the step again."""
    ledger, _ = _leg_location(transfer, leg)
    for _attempt in range(3):
        verdict = _leg_step(ledger, step, transfer, doing=doing)
        if verdict is None or verdict:
            return
        refused = _refusal_found(transfer, leg)
        if refused is not None:
            raise refused
    raise TransferRefused(_busy())


def _prepare_statements(transfer: Transfer, leg: str) -> Verdict | None:
    """Check the leg's account and hold the amount in its pending counter, write the leg PREPARED.
    A VOIDED tombstone left by recovery makes the insert fail on the unique key. Returns the
    deferred check's verdict (``_change_checked``)."""
    now = timezone.now()
    verdict = _change_checked(transfer, leg, field=_pending_field(leg), now=now)
    _leg_insert(transfer, leg, state=LegState.PREPARED, now=now, verdict=verdict)
    return verdict


def _leg_insert(transfer: Transfer, leg: str, *, state: str, now: datetime, verdict: Verdict | None) -> None:
    """Write one leg of the transfer in its ledger, with the step's verdict (``_change_checked``)."""
    ledger, pk = _leg_location(transfer, leg)
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


def _post_leg(
    ledger: str,
    *,
    leg: str,
    account_pk: int,
    amount: Decimal,
    transfer_id: uuid.UUID,
    kind: str,
    description: str,
    now,
    release_pending: bool = False,
    only_if: str = "",
) -> None:  # type: ignore[no-untyped-def]
    """Post a leg's amount on its locked account (and release what its prepare held)."""
    ledger_sql.post(
        ledger,
        account_pk=account_pk,
        delta=-amount if leg == Leg.DEBIT else amount,
        transfer_id=transfer_id,
        entry_kind=ENTRY_KIND[kind],
        description=description,
        now=now,
        release_pending=_pending_field(leg) if release_pending else None,
        only_if=only_if,
    )


def leg_prepare(transfer: Transfer) -> None:
    """Phase 1, the debit leg in the source ledger: lock the account, check it, its funds and its
    daily limit, hold the amount in pending debits, write the leg PREPARED. Raises
    ``TransferRefused`` (rolled back, nothing held). A VOIDED tombstone left by recovery makes the
    insert fail on the unique key: the late prepare is refused."""
    _checked_step(
        transfer, Leg.DEBIT, lambda: _prepare_statements(transfer, Leg.DEBIT), doing="preparing the debit leg"
    )


def leg_decide(transfer: Transfer, leg: str = Leg.CREDIT) -> None:
    """Phase 2, the decision, in the ledger of the transfer's decision leg (the credit leg, or the
    debit leg when the credit leg was prepared in the control plane's transaction): lock the
    account, check it (a debit: also funds and daily limit), post the amount with its entry and
    write the leg COMMITTED, in one commit. Once it returns, the transfer will complete. Raises
    ``TransferRefused`` when it certainly did not commit (account refused, recovery's tombstone
    already there, deadline passed, ledger down before the commit), and ``CommitOutcomeUnknown``
    when the connection failed during the commit itself: then only recovery can tell, from the
    ledger, which way it went."""
    ledger, pk = _leg_location(transfer, leg)

    def decide() -> Verdict | None:
        now = timezone.now()
        verdict = _change_checked(transfer, leg, field="posted", now=now)
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
    _checked_step(transfer, leg, decide, doing="deciding")


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
        raise TransferRefused(_busy()) from None
    except CommitOutcomeUnknown:
        raise
    except OperationalError as exc:
        logger.warning("transfer %s: ledger %s failed while %s: %s", transfer.id, ledger, doing, exc)
        raise TransferRefused(
            LedgerUnavailable(f"Ledger {ledger} did not answer; the transfer was not made.")
        ) from None


def leg_commit(transfer: Transfer, leg: str) -> bool:
    """Finish: PREPARED → COMMITTED, posting the held amount and writing the entry. Exactly once:
    the conditional update claims the leg, so True means this call did it and False that it was
    already done (or voided, which reconciliation reports). May raise ``OperationalError``."""
    ledger, pk = _leg_location(transfer, leg)
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
        _post_leg(
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
    tombstone so that a late prepare fails. True if this call changed anything."""
    ledger, pk = _leg_location(transfer, leg)
    return _leg_void_at(
        ledger=ledger,
        transfer_id=transfer.id,
        leg=leg,
        account_pk=pk,
        amount=transfer.amount,
        kind=transfer.kind,
        business_date=transfer.business_date,
    )


def _leg_void_at(
    *, ledger: str, transfer_id: uuid.UUID, leg: str, account_pk: int, amount: Decimal, kind: str, business_date
) -> bool:  # type: ignore[no-untyped-def]
    field = _pending_field(leg)

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


def _execute_cross_ledger(transfer: Transfer, actor: Actor) -> None:
    if not _prepare_debit(transfer, actor):
        return
    fault_point("after_prepare_debit")
    try:
        leg_decide(transfer)
    except TransferRefused as refused:
        _decide_abort(transfer, actor, refused.error, legs_to_void=[Leg.DEBIT])
        return
    # CommitOutcomeUnknown from the decision propagates: ``_transfer_submit`` answers "ledger
    # unavailable" and recovery reads the credit leg to settle it.
    fault_point("after_decide_credit")
    try:
        leg_commit(transfer, Leg.DEBIT)
    except (OperationalError, LockConflictGaveUp):
        logger.warning("transfer %s: decided, finishing the debit leg deferred to recovery", transfer.id)
        _mark_committed(transfer)
        return
    fault_point("after_finish_debit")
    _complete(transfer, actor)


def _prepare_debit(transfer: Transfer, actor: Actor) -> bool:
    """Phase 1 in the source ledger's own transaction; a refusal aborts the transfer (False)."""
    try:
        leg_prepare(transfer)
    except TransferRefused as refused:
        _decide_abort(transfer, actor, refused.error)
        return False
    except CommitOutcomeUnknown:
        # Prepared or not, nothing is decided: aborting voids the leg (or tombstones it) either way.
        _decide_abort(
            transfer,
            actor,
            LedgerUnavailable(f"Ledger {transfer.source_ledger} did not answer; the transfer was not made."),
            legs_to_void=[Leg.DEBIT],
        )
        return False
    return True


# --- with the control plane's server --------------------------------------------------------------
#
# When a leg's ledger is a database on the control plane's server (the designed topology: DB1 holds
# ``bank_core`` beside ``bank_source``), that leg's steps share the control plane's transactions:
# one InnoDB transaction across the two databases (``bankcore.db.server_transaction(join=…)``).
# That leg is the transfer's *home* leg and the other is decided on its own:
#
#   1. accept + prepare the home leg          (control plane's server: one commit)
#   2. decide: the other leg COMMITTED         (its ledger: one commit; the point of no return)
#   3. finish the home leg + COMPLETED         (control plane's server: one commit)
#
# Three commits instead of five, each one round trip (the checks are batched with the writes). A
# refusal at home leaves the accept committed and then aborts the transfer (two commits); a
# refusal of the decision aborts and voids the home leg in one. A transfer inside the home ledger
# is one commit altogether. The rule recovery reads is the same as the five-step protocol's: the
# transfer is decided once one leg is COMMITTED; the leg that was never prepared (the decision's)
# is the one recovery tombstones.


def _home_leg(transfer: Transfer) -> str | None:
    """The leg whose ledger shares the control plane's server, if any (the debit leg if both do)."""
    if not settings.BANKCORE_SHARED_COMMITS:
        return None
    if same_server("default", transfer.source_ledger):
        return Leg.DEBIT
    if transfer.is_cross_ledger and same_server("default", transfer.destination_ledger):
        return Leg.CREDIT
    return None


def _accept_at_home(transfer: Transfer, actor: Actor, accept: Callable[[], None], home: str) -> None:
    """Accept and the home leg's step in one commit: across ledgers, the home leg PREPARED (its
    checks batched with the commit); inside the home ledger, the whole transfer, COMPLETED. A
    refusal of the batched checks leaves the accept committed and nothing held, and the transfer is
    then aborted with the account's reason (``_prepare_after_accept``); a refusal raised before the
    commit (the local transfer's checks) or a lock given up on rolls everything back and records
    the transfer ABORTED instead, in one commit. IntegrityError (the idempotency key taken),
    OperationalError and CommitOutcomeUnknown propagate to ``_transfer_submit``."""
    ledger, _ = _leg_location(transfer, home)
    step: Callable[[], Verdict | None]
    if transfer.is_cross_ledger:
        step = lambda: _prepare_statements(transfer, home)  # noqa: E731
    else:
        now = timezone.now()
        transfer.status, transfer.committed_at, transfer.finished_at = Status.COMPLETED, now, now

        def step() -> None:
            _local_statements(transfer)
            _transfer_event(transfer, actor, "transfer.completed")

    def work() -> Verdict | None:
        accept()
        return step()

    try:
        verdict = atomic_with_retry("default", work, join=[ledger])
    except TransferRefused as refused:
        error = refused.error
    except LockConflictGaveUp:
        error = _busy()
    else:
        if verdict is not None and not verdict:
            # The check was deferred and refused: the accept committed, nothing was held. (Outside
            # the try: the transfer exists now, so a failure from here on is not "nothing recorded".)
            _prepare_after_accept(transfer, actor, home)
        return
    now = timezone.now()
    transfer.status, transfer.committed_at, transfer.finished_at = Status.ABORTED, None, now
    transfer.failure_code, transfer.failure_detail = error.code, error.detail[:500]

    def refused_work() -> None:
        accept()
        _transfer_event(transfer, actor, "transfer.aborted", failure_code=error.code)

    atomic_with_retry("default", refused_work)


def _prepare_after_accept(transfer: Transfer, actor: Actor, home: str) -> None:
    """The home leg's deferred check refused in the accept's commit, which recorded the transfer
    PENDING with nothing held: abort it with the account's reason, or, if the account has none by
    now, prepare the leg in its ledger's own transaction. A lock given up on aborts it as busy
    (``_refusal_found``, ``_leg_step``); a database that fails leaves it PENDING, for recovery to
    abort past its deadline."""
    try:
        refused = _refusal_found(transfer, home)
        if refused is None:
            _checked_step(transfer, home, lambda: _prepare_statements(transfer, home), doing="preparing")
            return
    except TransferRefused as again:
        refused = again
    _decide_abort(transfer, actor, refused.error)


def _execute_from_home(transfer: Transfer, actor: Actor, home: str) -> None:
    """Steps 2 and 3 of a transfer whose home leg is prepared (step 1 was the accept)."""
    decision = Leg.DEBIT if home == Leg.CREDIT else Leg.CREDIT
    try:
        leg_decide(transfer, decision)
    except TransferRefused as refused:
        _abort_at_home(transfer, actor, refused.error, home)
        return
    # CommitOutcomeUnknown from the decision propagates, as in ``_execute_cross_ledger``.
    fault_point(f"after_decide_{decision}")
    try:
        _finish_at_home(transfer, actor, home)
    except (OperationalError, LockConflictGaveUp):
        logger.warning("transfer %s: decided, finishing the %s leg deferred to recovery", transfer.id, home)
        _mark_committed(transfer)


def _finish_at_home(transfer: Transfer, actor: Actor, home: str) -> None:
    """The home leg PREPARED → COMMITTED (posted, its entry written) and the transfer COMPLETED,
    in one commit and one round trip: one update claims both rows (both or neither), and the
    posting and the audit event are written only with that claim. If recovery got to either
    first, nothing is written here and recovery finishes the rest."""
    ledger, pk = _leg_location(transfer, home)

    def work() -> tuple[Verdict, datetime]:
        now = timezone.now()
        claimed = ledger_sql.leg_and_transfer_claim_deferred(ledger, transfer_id=transfer.id, leg=home, now=now)
        _post_leg(
            ledger,
            leg=home,
            account_pk=pk,
            amount=transfer.amount,
            transfer_id=transfer.id,
            kind=transfer.kind,
            description=transfer.reference,
            now=now,
            release_pending=True,
            only_if=ledger_sql.VERDICT_OK,
        )
        _transfer_event(transfer, actor, "transfer.completed", only_if=ledger_sql.VERDICT_OK)
        return claimed, now

    claimed, finished = atomic_with_retry("default", work, join=[ledger])
    if not claimed:
        transfer.refresh_from_db()
        return
    transfer.status, transfer.finished_at = Status.COMPLETED, finished
    transfer.committed_at = transfer.committed_at or finished


def _abort_at_home(transfer: Transfer, actor: Actor, error: ApplicationError, home: str) -> None:
    """The decision was refused: the transfer ABORTED with the reason and the home leg VOIDED
    (its pending amount released), in one commit. If recovery got there first, its outcome stands."""
    ledger, pk = _leg_location(transfer, home)
    field = _pending_field(home)
    detail = error.detail[:500]

    def work() -> datetime | None:
        now = timezone.now()
        voided, aborted = ledger_sql.leg_void_and_transfer_abort(
            ledger, transfer_id=transfer.id, leg=home, now=now, failure_code=error.code, failure_detail=detail
        )
        if voided:
            ledger_sql.pending_add(ledger, account_pk=pk, field=field, amount=-transfer.amount, now=now)
        if not aborted:
            return None  # recovery aborted it first (its outcome stands); a leg it left is voided here
        _transfer_event(transfer, actor, "transfer.aborted", failure_code=error.code)
        return now

    aborted = atomic_with_retry("default", work, join=[ledger])
    if aborted is None:
        transfer.refresh_from_db()
        return
    transfer.status, transfer.finished_at = Status.ABORTED, aborted
    transfer.failure_code, transfer.failure_detail = error.code, detail


# --- decisions (control plane) --------------------------------------------------------------------


def _mark_committed(transfer: Transfer) -> None:
    """Say in the control plane that a transfer is decided but not finished (the API answers 202
    "committed"; recovery finishes it after its grace period). Only a hint: the decision itself is
    the committed credit leg, which recovery reads when this could not be written."""
    now = timezone.now()
    try:
        if ledger_sql.transfer_mark_committed(transfer.id, now=now):
            transfer.status, transfer.committed_at = Status.COMMITTED, now
    except OperationalError:
        logger.warning("transfer %s: the control plane did not take the committed hint", transfer.id)


def _decide_abort(transfer: Transfer, actor: Actor, error: ApplicationError, *, legs_to_void: list[str] = ()) -> bool:  # type: ignore[assignment]
    """PENDING → ABORTED with the reason, then void what was prepared (recovery voids anything a
    failure here leaves behind). True if this call aborted it."""
    aborted = _abort_record(transfer, actor, error)
    fault_point("after_decide_abort")
    if transfer.status != Status.ABORTED:
        return False
    for leg in legs_to_void:
        try:
            leg_void(transfer, leg)
        except (OperationalError, LockConflictGaveUp):
            logger.warning("transfer %s: voiding the %s leg deferred to recovery", transfer.id, leg)
    return bool(aborted)


def _abort_record(transfer: Transfer, actor: Actor, error: ApplicationError) -> bool:
    """PENDING → ABORTED with the reason and its audit event, in ``default``; True if this call
    did it (otherwise ``transfer`` is refreshed: someone else decided it)."""
    now = timezone.now()
    with transaction.atomic(using="default"):
        aborted = Transfer.objects.filter(pk=transfer.pk, status=Status.PENDING).update(
            status=Status.ABORTED, failure_code=error.code, failure_detail=error.detail[:500], finished_at=now
        )
        if aborted:
            _transfer_event(transfer, actor, "transfer.aborted", failure_code=error.code)
    if aborted:
        transfer.status, transfer.finished_at = Status.ABORTED, now
        transfer.failure_code, transfer.failure_detail = error.code, error.detail[:500]
    else:
        transfer.refresh_from_db()
    return bool(aborted)


def _complete(transfer: Transfer, actor: Actor) -> bool:
    """PENDING/COMMITTED → COMPLETED with its audit event; True if this call did it."""
    now = timezone.now()

    def complete() -> bool:
        if not ledger_sql.transfer_mark_completed(transfer.id, now=now):
            return False
        _transfer_event(transfer, actor, "transfer.completed")
        return True

    done = atomic_with_retry("default", complete)
    if done:
        transfer.status, transfer.finished_at = Status.COMPLETED, now
        transfer.committed_at = transfer.committed_at or now
    else:
        transfer.refresh_from_db()
    return done


def _transfer_event(transfer: Transfer, actor: Actor, action: str, *, only_if: str = "", **extra: object) -> None:
    audit_event_record(
        only_if=only_if,
        actor=actor,
        action=action,
        object_type="transfer",
        object_id=str(transfer.id),
        changes={
            "kind": transfer.kind,
            "source": transfer.source_account,
            "destination": transfer.destination_account,
            "amount": str(transfer.amount),
            "currency": transfer.currency,
            "reference": transfer.reference,
            "created_by": transfer.created_by_id,
            **({"reversal_of": str(transfer.reversal_of_id)} if transfer.reversal_of_id else {}),
            **extra,
        },
    )
