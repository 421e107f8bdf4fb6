"""Reads for the partner API: which accounts a client may see, and pages of accounts across ledgers.

A partner (a user without ``accounts.view_account``) sees only the accounts linked to it by a
``PartnerAccountLink``; any other account answers exactly as a non-existent one, so a partner
cannot probe which numbers exist. Staff with ``accounts.view_account`` see every account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import QuerySet

from accounts.errors import AccountNotFound
from accounts.models import Account, Entry, PartnerAccountLink
from accounts.numbers import account_number_parse
from accounts.selectors import account_get

VIEW_ALL_ACCOUNTS_PERMISSION = "accounts.view_account"


@dataclass(frozen=True)
class AccountScope:
    """The accounts one client may see: all of them, or the linked numbers."""

    all: bool
    numbers: frozenset[str]


def account_scope(*, user: Any) -> AccountScope:
    if user.has_perm(VIEW_ALL_ACCOUNTS_PERMISSION):
        return AccountScope(all=True, numbers=frozenset())
    return AccountScope(all=False, numbers=account_numbers_linked(user=user))


def account_numbers_linked(*, user: Any) -> frozenset[str]:
    return frozenset(PartnerAccountLink.objects.filter(user=user).values_list("account_number", flat=True))


def account_get_visible(*, user: Any, number: str) -> Account:
    """The account, if ``user`` may see it (as ``account_scope`` says, asking about this one number
    only: a partner's link, else the permission). Raises ``InvalidAccountNumber`` for a malformed
    number and ``AccountNotFound`` both for a missing account and for one the user may not see."""
    parsed = account_number_parse(number)
    if not _linked_or_permitted(user=user, number=parsed.number, permission=VIEW_ALL_ACCOUNTS_PERMISSION):
        raise AccountNotFound(f"No account {parsed.number}.")
    return account_get(number=parsed.number)


def accounts_page(
    *,
    scope: AccountScope,
    ledger: str | None = None,
    status: str | None = None,
    currency: str | None = None,
    after: str | None = None,
    before: str | None = None,
    limit: int = 50,
) -> tuple[list[Account], bool]:
    """One page of the accounts ``scope`` may see, ordered by number across every ledger, and
    whether there are more in that direction. Keyset paging: ``after`` a number (forward) or
    ``before`` one (backward); both, the accounts between them, the last page before ``before``.
    A number starts with its ledger's code, so ordering by number is
    ordering by ledger, then account: each ledger is queried in turn, each for at most what the
    page still needs."""
    backward = before is not None
    codes = settings.LEDGERS
    aliases = sorted(codes, key=codes.__getitem__, reverse=backward)
    if ledger is not None:
        aliases = [alias for alias in aliases if codes[alias] == ledger]
    found: list[Account] = []
    for alias in aliases:
        if (after and codes[alias] < after[:2]) or (before and codes[alias] > before[:2]):
            continue
        qs: QuerySet[Account] = Account.objects.using(alias).filter(number__isnull=False)
        if not scope.all:
            numbers = [number for number in scope.numbers if number[:2] == codes[alias]]
            if not numbers:
                continue
            qs = qs.filter(number__in=numbers)
        if status:
            qs = qs.filter(status=status)
        if currency:
            qs = qs.filter(currency=currency)
        if backward:
            qs = qs.filter(number__lt=before).order_by("-number")
            if after:
                qs = qs.filter(number__gt=after)
        else:
            qs = qs.filter(number__gt=after).order_by("number") if after else qs.order_by("number")
        found.extend(qs[: limit + 1 - len(found)])
        if len(found) > limit:
            break
    has_more = len(found) > limit
    found = found[:limit]
    if backward:
        found.reverse()
    return found, has_more


def account_entries(
    *, account: Account, created_from: datetime | None = None, created_to: datetime | None = None
) -> QuerySet[Entry]:
    """The account's statement lines, newest first; ``created_from`` inclusive, ``created_to``
    exclusive."""
    qs = Entry.objects.using(account.ledger).filter(account_id=account.pk)
    if created_from is not None:
        qs = qs.filter(created_at__gte=created_from)
    if created_to is not None:
        qs = qs.filter(created_at__lt=created_to)
    return qs.order_by("-created_at", "-id")


DEBIT_ANY_ACCOUNT_PERMISSION = "transfers.add_transfer"


def account_may_debit(*, user: Any, number: str) -> bool:
    """Whether ``user`` may move money out of ``number``: a partner only out of its linked
    accounts, staff with ``transfers.add_transfer`` out of any."""
    return _linked_or_permitted(user=user, number=number, permission=DEBIT_ANY_ACCOUNT_PERMISSION)


def accounts_may_debit(*, user: Any, numbers: set[str]) -> set[str]:
    """Those of ``numbers`` that ``user`` may move money out of (``account_may_debit``'s rule),
    in one query for a batch."""
    if not numbers:
        return set()
    linked = set(
        PartnerAccountLink.objects.filter(user=user, account_number__in=numbers).values_list(
            "account_number", flat=True
        )
    )
    if linked != numbers and user.has_perm(DEBIT_ANY_ACCOUNT_PERMISSION):
        return set(numbers)
    return linked


def _linked_or_permitted(*, user: Any, number: str, permission: str) -> bool:
    # The link first: a partner's every request asks, and one indexed query is cheaper than
    # loading the user's permissions (two queries) that only staff need, or all of a partner's
    # links (``account_scope``, for lists). Written once as SQL: the ORM compiled this query anew
    # for every request (``transfers.ledger_sql`` says why).
    with connections["default"].cursor() as cursor:
        cursor.execute(_LINK_EXISTS, [user.pk, number])
        if cursor.fetchone() is not None:
            return True
    return bool(user.has_perm(permission))


_LINK_EXISTS = (
    f"SELECT 1 FROM {PartnerAccountLink._meta.db_table} WHERE "
    f"{PartnerAccountLink._meta.get_field('user').column} = %s AND "
    f"{PartnerAccountLink._meta.get_field('account_number').column} = %s LIMIT 1"
)
