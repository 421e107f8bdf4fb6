"""Row locks on accounts, always in one canonical order (ledger, then primary key), so that two
units of work locking the same accounts can never wait on each other in a cycle."""

from __future__ import annotations

from collections.abc import Iterable

from accounts.models import Account


def accounts_lock(*, ledger: str, pks: Iterable[int]) -> dict[int, Account]:
    """Lock the given accounts of one ledger ``FOR UPDATE`` in primary-key order; missing ones are
    simply absent from the result. Must run inside ``transaction.atomic(using=ledger)``."""
    rows = Account.objects.using(ledger).select_for_update().filter(pk__in=sorted(set(pks))).order_by("pk")
    return {account.pk: account for account in rows}


def account_lock(*, ledger: str, pk: int) -> Account | None:
    return accounts_lock(ledger=ledger, pks=[pk]).get(pk)
