"""Reads of ledger data. Every query names its ledger; numbers route themselves."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from decimal import Decimal

from django.conf import settings
from django.db.models import Q, QuerySet, Sum

from accounts.errors import AccountNotFound
from accounts.models import ZERO, Account, Entry
from accounts.numbers import account_number_parse
from bankcore.errors import ApplicationError


def ledger_aliases() -> list[str]:
    return list(settings.LEDGERS)


def account_get(*, number: str) -> Account:
    """The account with this number. Raises ``InvalidAccountNumber`` (malformed, bad check
    digits) before any query, ``AccountNotFound`` when no such account exists."""
    parsed = account_number_parse(number)
    account = Account.objects.using(parsed.ledger).filter(pk=parsed.serial).first()
    if account is None or account.number != parsed.number:
        raise AccountNotFound(f"No account {parsed.number}.")
    return account


def cash_account_key(currency: str) -> str:
    return f"cash:{currency}"


def cash_account_get(*, ledger: str, currency: str) -> Account | None:
    return Account.objects.using(ledger).filter(system_key=cash_account_key(currency)).first()


def accounts_search(
    *, query: str = "", limit: int = 50, status: str = "", currency: str = "", kind: str = ""
) -> list[Account]:
    """Find accounts by number (or part of one) or holder in every ledger, optionally narrowed by
    status, currency and kind; at most ``limit``, ledger by ledger in ledger order."""
    results: list[Account] = []
    digits = query.replace(" ", "")
    filters = {
        name: value for name, value in (("status", status), ("currency", currency.upper()), ("kind", kind)) if value
    }
    for ledger in ledger_aliases():
        qs: QuerySet[Account] = Account.objects.using(ledger).filter(**filters)
        if query:
            condition = Q(holder__icontains=query)
            if digits.isdigit():
                condition |= Q(number__contains=digits)
            qs = qs.filter(condition)
        results.extend(qs.order_by("pk")[: limit - len(results)])
        if len(results) >= limit:
            break
    return results


def account_entries_sum(*, account: Account) -> Decimal:
    total = Entry.objects.using(account.ledger).filter(account=account).aggregate(total=Sum("amount"))["total"]
    return total if total is not None else ZERO


def accounts_iter(*, ledger: str, chunk_size: int = 2000) -> Iterator[Account]:
    yield from Account.objects.using(ledger).order_by("pk").iterator(chunk_size=chunk_size)


def ledger_posted_total(*, ledger: str) -> Decimal:
    total = Account.objects.using(ledger).aggregate(total=Sum("posted"))["total"]
    return total if total is not None else ZERO


def accounts_by_number(*, numbers: Iterable[str]) -> dict[str, Account]:
    """The accounts of ``numbers`` that exist, by number: one query per ledger named (what a
    page listing many numbers shows their holders with). A number that is none is left out."""
    by_ledger: dict[str, list[int]] = {}
    for number in set(numbers):
        try:
            parsed = account_number_parse(number)
        except ApplicationError:
            continue
        by_ledger.setdefault(parsed.ledger, []).append(parsed.serial)
    found: dict[str, Account] = {}
    for ledger, serials in by_ledger.items():
        for account in Account.objects.using(ledger).filter(pk__in=serials):
            found[str(account.number)] = account
    return found


def ledger_for_new_account(*, holder: str) -> str:
    """The ledger a new customer account is opened in: chosen from the holder's name (a stable
    hash of it, spaces and case aside), so that ledgers fill evenly and one customer's accounts
    share a ledger, whose transfers between them are then local. Nobody at the counter chooses."""
    aliases = list(settings.LEDGERS)
    key = " ".join(holder.split()).casefold().encode()
    return aliases[zlib.crc32(key) % len(aliases)]
