"""The transfer engine's public services: the one way money moves (API, admin, commands and tasks
all call here). The engine itself is ``transfers.engine``, split by step.

Inside one ledger a transfer is one local atomic block. Across ledgers it follows a two-phase
protocol with each ledger's recovery table (``TransferLeg``), the decision merged into the credit
leg's commit (docs/architecture.md, "The transfer protocol"): accept, prepare the debit leg, decide
the credit leg (the point of no return), finish the debit leg, complete — five durable commits
(``transfers.engine.cross``), or three when one ledger shares the control plane's server
(``transfers.engine.home``). A transfer is decided if and only if one of its legs is COMMITTED; the
control plane's COMMITTED status is only a hint. Whatever a crash leaves behind,
``transfers.recovery`` finishes forward or voids past the deadline.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, OperationalError
from django.utils import timezone

from accounts.models import Account
from accounts.selectors import account_get
from accounts.services import account_open, opening_deposit_key, opening_deposit_parse
from bankcore.actors import Actor
from bankcore.db import CommitOutcomeUnknown, LockConflictGaveUp
from bankcore.errors import ApplicationError
from bankcore.faults import fault_point
from bankcore.idempotency import idempotency_key_clean
from bankcore.money import money_parse
from transfers.engine.accept import (
    REFERENCE_MAX_LENGTH,
    business_date_today,
    reference_clean,
    text_is_visible,
    transfer_submit,
)
from transfers.engine.batch import transfers_create_batch
from transfers.engine.batch_items import BatchItem, BatchOutcome
from transfers.engine.cross import debit_finish
from transfers.engine.legs import leg_decide, leg_void
from transfers.engine.outcome import (
    transfer_abort_decide,
    transfer_abort_record,
    transfer_complete,
    transfer_refusal_error,
)
from transfers.errors import (
    AmountAboveMaximum,
    LedgerBusy,
    LedgerUnavailable,
    TransferNotFound,
    TransferRefused,
)
from transfers.models import Transfer, TransferLeg

# What the doors (API, back office, approvals) use of the engine besides the services below.
__all__ = [
    "REFERENCE_MAX_LENGTH",
    "BatchItem",
    "BatchOutcome",
    "account_open_with_deposit",
    "business_date_today",
    "reference_clean",
    "text_is_visible",
    "transfer_cash_movement",
    "transfer_create",
    "transfer_held_execute",
    "transfer_hold",
    "transfer_hold_abort",
    "transfer_hold_release",
    "transfer_refusal_error",
    "transfer_reverse",
    "transfers_create_batch",
]

logger = logging.getLogger(__name__)

Leg = TransferLeg.Leg
Status = Transfer.Status


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
    return transfer_submit(
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
    return transfer_submit(
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
    return transfer_submit(
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
    return transfer_submit(
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
        transfer_abort_decide(transfer, actor, refused.error, legs_to_void=[Leg.DEBIT])
        error = transfer_refusal_error(transfer)
        raise (error or refused.error) from None
    except CommitOutcomeUnknown:
        raise LedgerUnavailable(
            f"Ledger {transfer.destination_ledger} did not answer; recovery completes or voids the transfer.",
            extra={"transfer_id": str(transfer.id)},
        ) from None
    fault_point("after_decide_credit")
    if debit_finish(transfer):
        transfer_complete(transfer, actor)
    return transfer


def transfer_hold_abort(*, actor: Actor, transfer: Transfer, error: ApplicationError) -> bool:
    """Decide a hold ABORTED with ``error`` as its reason (``default`` only: callable inside the
    caller's own transaction, so that the decision commits with whatever caused it). True if this
    call aborted it. Its debit leg is released by ``transfer_hold_release`` after the commit, or by
    recovery, which voids the prepared legs of aborted transfers."""
    return transfer_abort_record(transfer, actor, error)


def transfer_hold_release(*, transfer: Transfer) -> None:
    """Void an aborted hold's debit leg, releasing its pending amount; a ledger that does not
    answer leaves it to recovery."""
    try:
        leg_void(transfer, Leg.DEBIT)
    except (OperationalError, LockConflictGaveUp):
        logger.warning("transfer %s: releasing the hold deferred to recovery", transfer.id)
