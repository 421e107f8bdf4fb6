"""How transfers and approval requests are shown in the back office's lists and pages: their
state as a badge, their accounts by holder, their amounts with the currency."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest

from accounts.admin import account_link
from accounts.selectors import accounts_by_number
from backoffice.display import money, status_badge
from transfers.models import Approval, Transfer

APPROVAL_TONES: dict[str, str] = {
    Approval.Status.PENDING: "wait",
    Approval.Status.APPROVED: "wait",
    Approval.Status.EXECUTED: "ok",
    Approval.Status.REJECTED: "bad",
    Approval.Status.FAILED: "bad",
    Approval.Status.WITHDRAWN: "neutral",
    Approval.Status.EXPIRED: "neutral",
}


HOLDING = (Approval.Status.PENDING, Approval.Status.APPROVED)


def live_reversals(transfer: Transfer) -> QuerySet[Transfer]:
    return Transfer.objects.filter(reversal_of=transfer).exclude(status=Transfer.Status.ABORTED)


def with_badges(transfers: QuerySet[Transfer]) -> QuerySet[Transfer]:
    """Transfers with what their badges need (``is_reversed``, ``is_held``), read in the same query."""
    return transfers.annotate(
        is_reversed=Exists(Transfer.objects.filter(reversal_of=OuterRef("pk")).exclude(status=Transfer.Status.ABORTED)),
        is_held=Exists(Approval.objects.filter(transfer=OuterRef("pk"), status__in=HOLDING)),
    )


def badge_of(obj: Any) -> tuple[str, str]:
    """(words, tone) of a transfer's or a request's state, as its badge says it."""
    if isinstance(obj, Approval):
        return obj.get_status_display(), APPROVAL_TONES.get(obj.status, "neutral")
    held = getattr(obj, "is_held", None)
    if held is None:
        held = Approval.objects.filter(transfer=obj, status__in=HOLDING).exists()
    if obj.status == Transfer.Status.PENDING and held:
        return "Pending approval", "wait"
    if obj.status == Transfer.Status.COMPLETED:
        reversed_ = getattr(obj, "is_reversed", None)
        if reversed_ is None:
            reversed_ = live_reversals(obj).exists()
        return ("Reversed", "neutral") if reversed_ else ("Completed", "ok")
    if obj.status == Transfer.Status.ABORTED:
        return "Not made", "bad"
    return "In progress", "wait"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows are written by services only. Source and destination show their holders, linking to
    the accounts' pages; amounts are written with their currency."""

    actions = None

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        # The holders of a page of rows, read once per ledger rather than twice per row.
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)
        found = accounts_by_number(numbers=[n for r in rows for n in (r.source_account, r.destination_account) if n])
        for row in rows:
            row.bo_accounts = found
        return changelist

    def _account(self, obj: Any, number: str) -> Any:
        known = getattr(obj, "bo_accounts", None)
        return account_link(number, known.get(number) if known is not None else None)

    @admin.display(description="from")
    def source(self, obj: Any) -> Any:
        return self._account(obj, obj.source_account)

    @admin.display(description="to")
    def destination(self, obj: Any) -> Any:
        return self._account(obj, obj.destination_account)

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, obj: Any) -> str:
        return money(obj.amount, obj.currency)

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Any) -> Any:
        label, tone = badge_of(obj)
        return status_badge(label, tone)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
