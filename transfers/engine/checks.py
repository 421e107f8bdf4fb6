"""Where a transfer's leg lives, and the checks made on its account under the account's row lock
(state, kind, currency, funds, daily limit). Every form of transfer refuses by these, raising
``TransferRefused``; none of them writes anything but the leg's conditional change."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings

from accounts.errors import AccountClosed, AccountFrozen, AccountNotFound, InternalAccount
from accounts.models import Account
from accounts.numbers import account_number_serial
from bankcore.db import LockConflictGaveUp, atomic_with_retry, batching
from transfers import ledger_sql
from transfers.errors import (
    CurrencyMismatch,
    DailyLimitExceeded,
    InsufficientFunds,
    LedgerBusy,
    TransferRefused,
)
from transfers.ledger_sql import LockedAccount, Verdict
from transfers.models import Transfer, TransferLeg

Leg = TransferLeg.Leg


def ledger_busy() -> LedgerBusy:
    return LedgerBusy("The account is busy; the transfer was not made.")


def leg_location(transfer: Transfer, leg: str) -> tuple[str, int]:
    """(ledger alias, account pk) of one leg, from what the transfer stored when its numbers were
    parsed and routed at submit."""
    if leg == Leg.DEBIT:
        return transfer.source_ledger, account_number_serial(transfer.source_account)
    return transfer.destination_ledger, account_number_serial(transfer.destination_account)


def leg_pending_field(leg: str) -> str:
    """The counter a leg's amount is held in while it is PREPARED."""
    return "pending_debits" if leg == Leg.DEBIT else "pending_credits"


def account_check(account: LockedAccount | None, transfer: Transfer, *, side: str) -> LockedAccount:
    """The locked account of the transfer's ``side`` ("source" or "destination") may take part."""
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


def accounts_lock_for_debit(
    ledger: str, pks: list[int], transfer: Transfer, *, source_pk: int
) -> tuple[dict[int, LockedAccount], Decimal]:
    """Lock the accounts; for a transfer, also read what the source moved today (its daily limit),
    in the same round trip."""
    if transfer.kind != Transfer.Kind.TRANSFER:
        return ledger_sql.accounts_lock(ledger, pks), Decimal("0.00")
    return ledger_sql.accounts_lock_and_daily_debits(
        ledger, pks, account_pk=source_pk, business_date=transfer.business_date
    )


def funds_and_limit_check(account: LockedAccount, transfer: Transfer, *, spent_today: Decimal) -> None:
    if not account.allow_overdraft and account.available < transfer.amount:
        raise TransferRefused(InsufficientFunds(f"Account {account.number} has {account.available} available."))
    daily_limit_check(account.number, account.kind, transfer, spent_today=spent_today)


def daily_limit_check(number: str, account_kind: str | None, transfer: Transfer, *, spent_today: Decimal) -> None:
    if transfer.kind != Transfer.Kind.TRANSFER or account_kind != Account.Kind.CUSTOMER:
        return
    # Read under the account's row lock: every debit leg of this account is written under it too.
    if spent_today + transfer.amount > settings.DAILY_TRANSFER_LIMIT:
        raise TransferRefused(
            DailyLimitExceeded(
                f"Account {number} has moved {spent_today} today; the daily limit is {settings.DAILY_TRANSFER_LIMIT}."
            )
        )


def leg_lock_and_check(transfer: Transfer, leg: str) -> LockedAccount:
    """Inside the leg's ledger transaction: lock the leg's account and check it; for the debit,
    also its funds and daily limit (read in the same round trip as the lock)."""
    ledger, pk = leg_location(transfer, leg)
    if leg == Leg.CREDIT:
        return account_check(ledger_sql.accounts_lock(ledger, [pk]).get(pk), transfer, side="destination")
    locked, spent_today = accounts_lock_for_debit(ledger, [pk], transfer, source_pk=pk)
    account = account_check(locked.get(pk), transfer, side="source")
    funds_and_limit_check(account, transfer, spent_today=spent_today)
    return account


def leg_change_checked(transfer: Transfer, leg: str, *, field: str, now: datetime) -> Verdict | None:
    """Inside the leg's ledger transaction: apply the leg's amount to its account's ``field`` (hold
    it in a pending counter, or post it) by the conditional update that is also the check of the
    account and, for the debit, of its funds (``ledger_sql.account_change_checked``); then the daily
    limit of a customer's debit, read under the row lock the update took. Raises
    ``TransferRefused``. Why an update changed nothing is found out under the row lock by the same
    checks in Python (``leg_lock_and_check``), which raise the refusal; if nothing is wrong by then
    (the account changed in between), the change applies under that lock.

    In a batched transaction (MySQL) the checks are SQL instead, the same ones
    (``ledger_sql.account_change_checked_deferred``): it returns their ``Verdict``, the step's
    writes carry ``only_if=VERDICT_OK`` and the step goes in one round trip with its COMMIT;
    ``transfers.engine.legs.leg_step_checked`` explains a refusal afterwards with the Python
    checks. Elsewhere (SQLite) it checks at once and returns None."""
    ledger, pk = leg_location(transfer, leg)
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
        # conditional on the checks' verdict (``leg_step_checked`` reads it afterwards).
        limit = settings.DAILY_TRANSFER_LIMIT if daily is not None else None
        return ledger_sql.account_change_checked_deferred(ledger, **arguments, daily_limit=limit)

    def change() -> tuple[bool, str | None, Decimal]:
        return ledger_sql.account_change_checked(ledger, **arguments)

    changed, kind, spent_today = change()
    if not changed:
        leg_lock_and_check(transfer, leg)
        changed, kind, spent_today = change()
        if not changed:
            raise RuntimeError(f"account {number} passed its checks under the lock but its update changed nothing")
    if daily is not None:
        daily_limit_check(number, kind, transfer, spent_today=spent_today)
    return None


def leg_refusal_found(transfer: Transfer, leg: str) -> TransferRefused | None:
    """Why the leg's account refused a deferred check, found under its row lock by the Python
    checks (the refusal path only); None if nothing is wrong with it by now."""
    ledger, _ = leg_location(transfer, leg)
    try:
        atomic_with_retry(ledger, lambda: leg_lock_and_check(transfer, leg))
    except TransferRefused as refused:
        return refused
    except LockConflictGaveUp:
        return TransferRefused(ledger_busy())
    return None
