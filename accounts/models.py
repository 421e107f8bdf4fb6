"""Ledger tables: these exist in every ledger database (see ``bankcore.router``).

Balances are kept TigerBeetle-style: ``posted`` plus ``pending_debits`` and ``pending_credits``
held by prepared transfer legs. Available = posted − pending debits. The database itself refuses a
negative pending amount and an available balance below zero on an account without overdraft.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, NoReturn

from django.db import models
from django.db.models import F, Q
from django.db.models.expressions import Combinable

ZERO = Decimal("0.00")


def money_field(**kwargs: Any) -> models.DecimalField[str | int | Decimal | Combinable, Decimal]:
    """Exact money: 18 digits before the point, 2 after. Never a float (its type refuses one)."""
    return models.DecimalField(max_digits=20, decimal_places=2, **kwargs)


class Account(models.Model):
    class Kind(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        INTERNAL = "internal", "Internal"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        FROZEN = "frozen", "Frozen"
        CLOSED = "closed", "Closed"

    # Derived from (ledger code, pk) right after insert; see accounts.numbers.
    number = models.CharField(max_length=14, unique=True, null=True, editable=False)
    holder = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CUSTOMER)
    # Internal accounts the system needs exactly one of ("cash:CNY"); NULL for customers.
    system_key = models.CharField(max_length=32, unique=True, null=True, blank=True, editable=False)
    currency = models.CharField(max_length=3, default="CNY")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    posted = money_field(default=ZERO, editable=False)
    pending_debits = money_field(default=ZERO, editable=False)
    pending_credits = money_field(default=ZERO, editable=False)
    allow_overdraft = models.BooleanField(default=False)
    # Who opened it (``Actor.client_id``) with which idempotency key: a form submitted twice opens
    # one account. Kept on the account's own row, so the key and the account commit together.
    opened_by = models.CharField(max_length=64, null=True, blank=True, editable=False)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Set by account_open when the key had opened this account already; not stored.
    replayed: bool = False

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["opened_by", "idempotency_key"], name="account_idempotency_key_unique"),
            models.CheckConstraint(condition=Q(pending_debits__gte=0), name="account_pending_debits_non_negative"),
            models.CheckConstraint(condition=Q(pending_credits__gte=0), name="account_pending_credits_non_negative"),
            models.CheckConstraint(
                condition=Q(allow_overdraft=True) | Q(posted__gte=F("pending_debits")),
                name="account_available_non_negative",
            ),
        ]
        indexes = [models.Index(fields=["holder"])]
        permissions = [
            ("handle_cash", "Can book cash deposits and withdrawals"),
            ("freeze_account", "Can freeze and unfreeze accounts"),
            ("close_account", "Can close accounts"),
        ]

    def __str__(self) -> str:
        return f"{self.number} {self.holder}"

    @property
    def ledger(self) -> str:
        return self._state.db or ""

    @property
    def available(self) -> Decimal:
        return self.posted - self.pending_debits


class Entry(models.Model):
    """One immutable line per balance change. An account's posted balance always equals the sum of
    its entries; a transfer touches an account at most once (unique constraint). Immutable in the
    database too: triggers in every ledger refuse any UPDATE or DELETE (migration 0004)."""

    class Kind(models.TextChoices):
        DEPOSIT = "deposit", "Cash deposit"
        WITHDRAWAL = "withdrawal", "Cash withdrawal"
        TRANSFER = "transfer", "Transfer"
        REVERSAL = "reversal", "Reversal"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries")
    amount = money_field()
    balance_after = money_field()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    transfer_id = models.UUIDField()
    description = models.CharField(max_length=140, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="entry_amount_non_zero"),
            models.UniqueConstraint(fields=["transfer_id", "account"], name="entry_once_per_transfer_and_account"),
        ]
        indexes = [models.Index(fields=["account", "-created_at", "-id"])]
        verbose_name_plural = "entries"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise RuntimeError("entries are immutable")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError("entries are immutable")


class PartnerAccountLink(models.Model):
    """Control plane (``default``): which accounts a partner system may see and debit."""

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="account_links")
    account_number = models.CharField(max_length=14, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "account_number"], name="partner_account_link_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} → {self.account_number}"
