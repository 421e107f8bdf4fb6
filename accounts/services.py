"""Writes to accounts: opening and state changes.

Every service takes an ``Actor`` (who, through which door), refuses with an ``ApplicationError``
that carries a stable code, and changes nothing when it refuses. No money moves here: a cash
deposit or withdrawal, an opening deposit included, is a transfer to or from the ledger's internal
cash account (``transfers.services.transfer_cash_movement``, ``account_open_with_deposit``), so
there is one way of moving money and one set of checks.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction

from accounts.errors import (
    AccountClosed,
    AccountNotEmpty,
    InternalAccount,
    InvalidAccountState,
    InvalidHolder,
)
from accounts.lock_objects import account_lock
from accounts.models import ZERO, Account
from accounts.numbers import account_number_make, account_number_parse
from accounts.selectors import account_get, cash_account_get, cash_account_key
from audit.services import audit_event_record
from bankcore.actors import Actor
from bankcore.errors import ValidationFailed
from bankcore.faults import fault_point
from bankcore.idempotency import IdempotencyKeyReused, idempotency_key_clean
from bankcore.money import AmountAboveMaximum, currency_parse, money_parse

HOLDER_MAX_LENGTH = 200


class UnknownLedgerAlias(ValidationFailed):
    code = "unknown_ledger"
    title = "Unknown ledger"


def _holder_clean(holder: object) -> str:
    if not isinstance(holder, str):
        raise InvalidHolder("The holder's name must be text.")
    cleaned = " ".join(holder.split())
    if not cleaned:
        raise InvalidHolder("The holder's name must not be empty.")
    if len(cleaned) > HOLDER_MAX_LENGTH:
        raise InvalidHolder(f"The holder's name has at most {HOLDER_MAX_LENGTH} characters.")
    if not cleaned.isprintable():
        raise InvalidHolder("The holder's name contains control characters.")
    return cleaned


def _account_insert(*, ledger: str, **fields: object) -> Account:
    account = Account(**fields)
    account.save(using=ledger)
    account.number = account_number_make(ledger_code=settings.LEDGERS[ledger], serial=account.pk)
    Account.objects.using(ledger).filter(pk=account.pk).update(number=account.number)
    return account


def cash_account_ensure(*, ledger: str, currency: str) -> Account:
    """The ledger's internal cash/settlement account for ``currency``, created on first use. Money
    enters a ledger only by a movement out of this account, so the balances of all accounts of all
    ledgers always sum to zero."""
    existing = cash_account_get(ledger=ledger, currency=currency)
    if existing is not None:
        return existing
    try:
        with transaction.atomic(using=ledger):
            return _account_insert(
                ledger=ledger,
                holder=f"Cash and settlement {currency} (ledger {settings.LEDGERS[ledger]})",
                kind=Account.Kind.INTERNAL,
                system_key=cash_account_key(currency),
                currency=currency,
                allow_overdraft=True,
            )
    except IntegrityError:  # created concurrently by someone else
        account = cash_account_get(ledger=ledger, currency=currency)
        assert account is not None
        return account


def opening_deposit_parse(value: Decimal | str) -> Decimal:
    """An opening deposit's amount, refused (``InvalidAmount``, ``AmountAboveMaximum``) as the
    deposit itself would refuse it. The deposit is a transfer of its own, committed after the
    account: whoever opens an account with one checks it first, or the refusal would leave an
    opened, unfunded account behind a refused submission (the back office's form did)."""
    amount = money_parse(value)
    if amount > settings.MAX_TRANSFER_AMOUNT:
        raise AmountAboveMaximum(f"At most {settings.MAX_TRANSFER_AMOUNT} can be moved at once.")
    return amount


def account_open(
    *,
    actor: Actor,
    ledger: str,
    holder: str,
    currency: str | None = None,
    allow_overdraft: bool = False,
    idempotency_key: str | None = None,
) -> Account:
    """Open a customer account in ``ledger``, empty (``transfers.services.account_open_with_deposit``
    opens one with money in it). With ``idempotency_key``, the same client opening the same
    account again gets the first one back, ``replayed`` set. Raises ``UnknownLedgerAlias``,
    ``InvalidHolder``, ``InvalidCurrency``, ``InvalidIdempotencyKey`` and ``IdempotencyKeyReused``
    (the key opened another account) before anything is written."""
    if ledger not in settings.LEDGERS:
        raise UnknownLedgerAlias(f"There is no ledger {ledger!r}; configured: {', '.join(settings.LEDGERS)}.")
    holder = _holder_clean(holder)
    currency = currency_parse(currency or settings.DEFAULT_CURRENCY)
    key = idempotency_key_clean(idempotency_key)
    asked = (ledger, holder, currency, allow_overdraft)
    account = _account_opened_with(actor, key, asked) if key is not None else None
    if account is None:
        cash_account_ensure(ledger=ledger, currency=currency)
        try:
            # The account commits in its ledger, then its event in the control plane: a crash in
            # between leaves an account without its event, which reconciliation reports (and a
            # retry under the key finds the account, never a second one).
            with transaction.atomic(using="default"):
                with transaction.atomic(using=ledger):
                    account = _account_insert(
                        ledger=ledger,
                        holder=holder,
                        currency=currency,
                        allow_overdraft=allow_overdraft,
                        opened_by=actor.client_id if key is not None else None,
                        idempotency_key=key,
                    )
                fault_point("after_account_insert")
                audit_event_record(
                    actor=actor,
                    action="account.opened",
                    object_type="account",
                    object_id=str(account.number),
                    ledger=ledger,
                    changes={"holder": holder, "currency": currency, "allow_overdraft": allow_overdraft},
                )
        except IntegrityError:
            # The same key submitted twice at once: the other submission opened it first.
            account = _account_opened_with(actor, key, asked) if key is not None else None
            if account is None:
                raise
    return account


def _account_opened_with(actor: Actor, key: str, asked: tuple[str, str, str, bool]) -> Account | None:
    """The account ``actor`` opened with ``key``, in any ledger, ``replayed`` set; None if none.
    ``IdempotencyKeyReused`` if it is not the account ``asked`` (ledger, holder, currency,
    overdraft)."""
    for alias in settings.LEDGERS:
        account = Account.objects.using(alias).filter(opened_by=actor.client_id, idempotency_key=key).first()
        if account is None:
            continue
        if (alias, account.holder, account.currency, account.allow_overdraft) != asked:
            raise IdempotencyKeyReused(
                f"This idempotency key already opened account {account.number}, for a different request.",
                extra={"account": str(account.number)},
            )
        account.replayed = True
        return account
    return None


def opening_deposit_key(key: str) -> str:
    """The idempotency key of the opening deposit of an account opened with ``key``: derived, so a
    resubmitted opening books its deposit (or asks its approval) once; hashed, so it stays within
    a key's 255 characters and apart from any key a client chose."""
    return f"account-open:{hashlib.sha256(key.encode()).hexdigest()}"


def _account_change_status(
    *, actor: Actor, number: str, action: str, reason: str, allowed_from: set[str], to: str
) -> Account:
    parsed = account_number_parse(number)
    account_get(number=number)  # AccountNotFound before opening a transaction
    with transaction.atomic(using="default"), transaction.atomic(using=parsed.ledger):
        account = account_lock(ledger=parsed.ledger, pk=parsed.serial)
        assert account is not None  # accounts are never deleted
        if account.kind == Account.Kind.INTERNAL:
            raise InternalAccount("Internal accounts cannot be frozen, unfrozen or closed.")
        if account.status not in allowed_from:
            if account.status == Account.Status.CLOSED:
                raise AccountClosed(f"Account {account.number} is closed.")
            raise InvalidAccountState(
                f"Account {account.number} is {account.status}; cannot {action.split('.')[-1]} it."
            )
        if to == Account.Status.CLOSED and (
            account.posted != ZERO or account.pending_debits or account.pending_credits
        ):
            raise AccountNotEmpty(
                f"Account {account.number} holds {account.posted} with {account.pending_debits} pending out and "
                f"{account.pending_credits} pending in; it can be closed only at zero with nothing pending."
            )
        previous = account.status
        Account.objects.using(parsed.ledger).filter(pk=account.pk).update(status=to)
        account.status = to
        audit_event_record(
            actor=actor,
            action=action,
            object_type="account",
            object_id=str(account.number),
            ledger=parsed.ledger,
            changes={"status": [previous, to], "reason": reason},
        )
    return account


def account_freeze(*, actor: Actor, number: str, reason: str = "") -> Account:
    """ACTIVE → FROZEN: no money moves in or out until unfrozen."""
    return _account_change_status(
        actor=actor,
        number=number,
        action="account.frozen",
        reason=reason,
        allowed_from={Account.Status.ACTIVE},
        to=Account.Status.FROZEN,
    )


def account_unfreeze(*, actor: Actor, number: str, reason: str = "") -> Account:
    """FROZEN → ACTIVE."""
    return _account_change_status(
        actor=actor,
        number=number,
        action="account.unfrozen",
        reason=reason,
        allowed_from={Account.Status.FROZEN},
        to=Account.Status.ACTIVE,
    )


def account_close(*, actor: Actor, number: str, reason: str = "") -> Account:
    """ACTIVE or FROZEN → CLOSED, only at a zero balance with nothing pending. Final."""
    return _account_change_status(
        actor=actor,
        number=number,
        action="account.closed",
        reason=reason,
        allowed_from={Account.Status.ACTIVE, Account.Status.FROZEN},
        to=Account.Status.CLOSED,
    )
