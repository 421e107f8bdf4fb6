"""What a test reads back from the ledgers to show that money moved, or that nothing did."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from accounts.models import Account

NOTHING_HELD = (Decimal("0.00"), Decimal("0.00"))


def number_of(account: Account) -> str:
    """An opened account's number (the column is NULL only between its insert and its numbering)."""
    assert account.number is not None, account
    return account.number


def balances(*accounts: Account) -> list[Decimal]:
    """Fresh posted balances of the given accounts, read from their ledgers."""
    from accounts.models import Account

    return [Account.objects.using(a.ledger).get(pk=a.pk).posted for a in accounts]


def held(*accounts: Account) -> list[tuple[Decimal, Decimal]]:
    """Fresh (pending debits, pending credits) of the given accounts: what transfers hold."""
    from accounts.models import Account

    return [
        (fresh.pending_debits, fresh.pending_credits)
        for fresh in (Account.objects.using(a.ledger).get(pk=a.pk) for a in accounts)
    ]


def world_snapshot(*accounts: Account) -> dict[str, Any]:
    """Everything a refused back-office action must leave untouched: the accounts' balances and
    status, every ledger's entries and live legs, transfers, approvals and audit events (but the
    record of a refusal itself, ``<action>.refused``: audit.services.audit_refusal_record)."""
    from accounts.models import Account, Entry
    from audit.models import AuditEvent
    from transfers.models import Approval, Transfer, TransferLeg

    return {
        "accounts": [
            (a.posted, a.pending_debits, a.pending_credits, a.status)
            for a in (Account.objects.using(x.ledger).get(pk=x.pk) for x in accounts)
        ],
        "entries": sum(Entry.objects.using(ledger).count() for ledger in settings.LEDGERS),
        "legs": sum(
            TransferLeg.objects.using(ledger).exclude(state=TransferLeg.State.VOIDED).count()
            for ledger in settings.LEDGERS
        ),
        "transfers": Transfer.objects.count(),
        "approvals": list(Approval.objects.order_by("pk").values_list("pk", "status")),
        "audit_events": AuditEvent.objects.exclude(action__endswith=".refused").count(),
    }
