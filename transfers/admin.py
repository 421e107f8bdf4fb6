"""Transfer screens: the list and page of transfers (read-only), "New transfer", reversal,
"Stuck transfers" with recovery, and the reconciliations with "Check the books".

Every change goes through one service (``transfers.approvals``, ``transfers.services``,
``transfers.recovery``) after its review (``backoffice.review``); the service's refusal is shown
on the form or as the page's error message. The four-eyes queue is ``transfers.admin_approvals``;
the counter's money on an account's page, ``transfers.admin_counter``.
"""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone

from accounts.admin import account_words
from accounts.selectors import accounts_by_number
from audit.chain import audit_chain_check
from audit.models import AuditChainHead
from audit.services import audit_event_record
from backoffice.display import account_no, in_words, money, short_id, status_badge
from backoffice.forms import AccountNumberField, AmountField, IdempotentForm
from backoffice.pages import (
    admin_actor,
    backoffice_render,
    may,
    person,
    refusal_on_form,
    require_perm,
    sent_again,
    service_error,
)
from backoffice.review import FORM_TEMPLATE, Review, review_or_form
from bankcore.actors import CHANNEL_WORDS
from bankcore.errors import ApplicationError
from transfers.admin_batches import bulk_urls
from transfers.admin_counter import movement_review
from transfers.admin_rows import ReadOnlyAdmin, live_reversals, with_badges
from transfers.approvals import money_movement_submit
from transfers.models import Approval, ReconciliationRun, Transfer
from transfers.reconciliation import reconciliation_run
from transfers.recovery import transfers_recover
from transfers.services import transfer_reverse


class TransferForm(IdempotentForm):
    source_account = AccountNumberField(max_length=20, label="From account")
    destination_account = AccountNumberField(max_length=20, label="To account")
    amount = AmountField(help_text='For example "1,250.50".')
    reference = forms.CharField(max_length=140, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The cursor where typing starts: the destination when the source came from its account's page.
        first = "destination_account" if self.initial.get("source_account") else "source_account"
        self.fields[first].widget.attrs["autofocus"] = True


class ReverseForm(IdempotentForm):
    reference = forms.CharField(
        max_length=140,
        label="Reason",
        help_text="Why the money goes back (kept as the reversal's reference).",
        widget=forms.TextInput(attrs={"autofocus": True}),
    )


# What a recovery pass did, as the stuck transfers' page says it.
RECOVERY_WORDS = {
    "transfer_completed": "transfers completed",
    "transfer_aborted": "transfers cancelled, their money released",
    "leg_committed": "halves of transfers finished",
    "leg_voided": "held amounts released",
    "skipped": "not due yet",
    "orphan_leg_committed": "halves without a transfer finished",
    "orphan_leg_voided": "held amounts without a transfer released",
    "approval_expired": "requests expired",
    "orphan_hold_released": "held amounts without a request released",
}

# A stuck transfer's engine status as a supervisor reads it (the code stays in its tooltip).
STUCK_WORDS = {
    Transfer.Status.PENDING: "In progress — not yet decided",
    Transfer.Status.COMMITTED: "Decided — finishing",
}


class TransferStateFilter(admin.SimpleListFilter):
    """The list narrowed to a state in the words of its badges (``badge_of``), not the engine's
    statuses: a pending transfer is either waiting for approval or in progress, a completed one may
    have been reversed."""

    title = "state"
    parameter_name = "state"
    STATES: dict[str, tuple[str, Q]] = {
        "progress": (
            "In progress",
            Q(status=Transfer.Status.COMMITTED) | Q(status=Transfer.Status.PENDING, is_held=False),
        ),
        "held": ("Pending approval", Q(status=Transfer.Status.PENDING, is_held=True)),
        "completed": ("Completed", Q(status=Transfer.Status.COMPLETED, is_reversed=False)),
        "reversed": ("Reversed", Q(status=Transfer.Status.COMPLETED, is_reversed=True)),
        "not_made": ("Not made", Q(status=Transfer.Status.ABORTED)),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, words) for value, (words, _) in self.STATES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        state = self.STATES.get(self.value() or "")
        return queryset.filter(state[1]) if state else queryset


def stuck_transfers() -> QuerySet[Transfer]:
    """Transfers not final past their deadline: recovery's work, or a sign it is not running."""
    return Transfer.objects.filter(
        status__in=[Transfer.Status.PENDING, Transfer.Status.COMMITTED], deadline__lt=timezone.now()
    ).order_by("deadline")


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdmin):
    list_display = ("short_id", "created_at", "kind", "status_display", "source", "destination", "amount_display")
    list_filter = (TransferStateFilter, "kind", "created_at")
    search_fields = ("=source_account", "=destination_account", "reference")
    ordering = ("-created_at",)
    list_select_related = ("created_by",)
    show_full_result_count = False
    fields = (
        "reference_display",
        "kind",
        "status_display",
        "source",
        "destination",
        "amount_display",
        "reference",
        "refusal",
        "reversal_of",
        "made_through",
        "made_by",
        "created_at",
        "finished_at",
    )
    readonly_fields = fields
    change_form_template = "admin/transfers/transfer/change_form.html"

    @admin.display(description="transfer", ordering="id")
    def short_id(self, obj: Transfer) -> str:
        return short_id(obj.id)

    @admin.display(description="transfer")
    def reference_display(self, obj: Transfer) -> str:
        return f"{short_id(obj.id)}  ({obj.id})"

    @admin.display(description="why it was not made")
    def refusal(self, obj: Transfer) -> str:
        return in_words(obj.failure_detail) if obj.failure_detail else "—"

    @admin.display(description="made through")
    def made_through(self, obj: Transfer) -> str:
        return CHANNEL_WORDS.get(obj.channel, obj.channel)

    @admin.display(description="made by")
    def made_by(self, obj: Transfer) -> str:
        return person(obj.created_by)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Transfer], search_term: str):
        try:
            return queryset.filter(pk=uuid.UUID(search_term.strip())), False
        except ValueError:
            return super().get_search_results(request, queryset, search_term.replace(" ", ""))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return may(request, "transfers.add_transfer")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # What does not apply to this transfer is not shown.
        hidden = set()
        if obj is not None and not obj.failure_detail:
            hidden.add("refusal")
        if obj is not None and obj.reversal_of_id is None:
            hidden.add("reversal_of")
        return [name for name in self.fields if name not in hidden]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Transfer]:
        return with_badges(super().get_queryset(request))

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("stuck/", wrap(self.stuck_view), name="transfers_transfer_stuck"),
            *bulk_urls(wrap),
            path("<path:object_id>/reverse/", wrap(self.reverse_view), name="transfers_transfer_reverse"),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        transfer = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if transfer is not None:
            context["subtitle"] = (
                f"{transfer.get_kind_display()} {short_id(transfer.pk)}: {money(transfer.amount, transfer.currency)}"
            )
            context.update(
                can_reverse=may(request, "transfers.reverse_transfer")
                and transfer.status == Transfer.Status.COMPLETED
                and transfer.kind != Transfer.Kind.REVERSAL
                and not live_reversals(transfer).exists(),
                reversals=Transfer.objects.filter(reversal_of=transfer).order_by("created_at"),
                approvals=Approval.objects.filter(transfer=transfer),
            )
        return super().change_view(request, object_id, form_url, context)

    # --- New transfer ----------------------------------------------------------------------

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None):
        require_perm(request, "transfers.add_transfer")
        initial = {"source_account": request.GET.get("source", "")}
        form = TransferForm(request.POST or None, initial=initial)
        page = {"title": "New transfer", "opts": self.model._meta, "threshold": settings.APPROVAL_THRESHOLD}
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            shown = review_or_form(
                request,
                form,
                review=lambda: movement_review(
                    request,
                    kind="transfer",
                    amount=data["amount"],
                    source=data["source_account"],
                    destination=data["destination_account"],
                ),
                **page,
            )
            if shown is not None:
                return shown
            try:
                outcome = money_movement_submit(
                    actor=admin_actor(request),
                    user=request.user,
                    kind=Approval.Kind.TRANSFER,
                    amount=data["amount"],
                    source_account=data["source_account"],
                    destination_account=data["destination_account"],
                    reference=data["reference"],
                    idempotency_key=form.key(),
                )
            except ApplicationError as error:
                refusal_on_form(form, error)
            else:
                if isinstance(outcome, Approval):
                    messages.warning(
                        request,
                        f"Transfer of {outcome.amount} {outcome.currency} waits for a supervisor's approval "
                        f"(request #{outcome.pk}): {outcome.why}.",
                    )
                    return HttpResponseRedirect(reverse("admin:transfers_approval_change", args=(outcome.pk,)))
                messages.success(
                    request,
                    f"Transfer {outcome.id} of {outcome.amount} {outcome.currency}: {outcome.status}{sent_again(outcome)}.",
                )
                return HttpResponseRedirect(reverse("admin:transfers_transfer_change", args=(outcome.pk,)))
        return backoffice_render(request, template=FORM_TEMPLATE, form=form, reviewed=True, **page)

    # --- Reverse ---------------------------------------------------------------------------

    def reverse_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        require_perm(request, "transfers.reverse_transfer")
        transfer = self.get_object(request, unquote(object_id))
        if transfer is None:
            messages.error(request, f"No transfer {object_id}.")
            return HttpResponseRedirect(reverse("admin:transfers_transfer_changelist"))
        form = ReverseForm(request.POST or None)
        found = accounts_by_number(numbers=[transfer.source_account, transfer.destination_account])
        payer = account_words(transfer.destination_account, found.get(transfer.destination_account))
        payee = account_words(transfer.source_account, found.get(transfer.source_account))
        amount = money(transfer.amount, transfer.currency)
        page = {
            "title": f"Reverse transfer {short_id(transfer.pk)}",
            "opts": self.model._meta,
            "explain": f"Reversing moves {amount} back from {payer} to {payee}, "
            "as a new transfer linked to this one. It can be done once.",
        }
        if request.method == "POST" and form.is_valid():
            shown = review_or_form(
                request,
                form,
                review=lambda: Review(
                    headline=f"Move {amount} back from {payer} to {payee}",
                    rows=[
                        ("Transfer reversed", short_id(transfer.pk)),
                        ("From", f"{payer} — {account_no(transfer.destination_account)}"),
                        ("To", f"{payee} — {account_no(transfer.source_account)}"),
                        ("Amount", amount),
                        ("Reason", form.cleaned_data["reference"]),
                    ],
                    note="The money moves back as soon as you confirm.",
                ),
                **page,
            )
            if shown is not None:
                return shown
            try:
                reversal = transfer_reverse(
                    actor=admin_actor(request),
                    transfer_id=transfer.pk,
                    reference=form.cleaned_data["reference"],
                    idempotency_key=form.key(),
                )
            except ApplicationError as error:
                service_error(request, error)
                return HttpResponseRedirect(reverse("admin:transfers_transfer_change", args=(transfer.pk,)))
            messages.success(request, f"Reversal {reversal.id}: {reversal.status}{sent_again(reversal)}.")
            return HttpResponseRedirect(reverse("admin:transfers_transfer_change", args=(reversal.pk,)))
        return backoffice_render(request, template=FORM_TEMPLATE, form=form, reviewed=True, **page)

    # --- Stuck transfers -------------------------------------------------------------------

    def stuck_view(self, request: HttpRequest) -> HttpResponse:
        require_perm(request, "transfers.view_transfer")
        if request.method == "POST":
            require_perm(request, "transfers.run_recovery")
            ids = request.POST.getlist("transfer")
            if not ids:
                messages.error(request, "Select the transfers to recover.")
            else:
                actor = admin_actor(request)
                report = transfers_recover(actor=actor, transfer_ids=ids)
                audit_event_record(
                    actor=actor,
                    action="recovery.run",
                    object_type="recovery",
                    object_id=f"{len(ids)} transfers",
                    changes={"transfers": ids, "actions": dict(report.actions), "errors": report.errors},
                )
                summary = (
                    "; ".join(f"{RECOVERY_WORDS.get(what, what)}: {n}" for what, n in sorted(report.actions.items()))
                    or "nothing to do"
                )
                if report.errors:
                    messages.error(request, f"Recovery: {summary}; errors: {'; '.join(report.errors)}")
                else:
                    messages.success(request, f"Recovery: {summary}.")
            return HttpResponseRedirect(reverse("admin:transfers_transfer_stuck"))
        last_run = None
        if request.user.has_perm("transfers.view_reconciliationrun"):
            last_run = ReconciliationRun.objects.order_by("-started_at").first()
        return backoffice_render(
            request,
            template="admin/transfers/transfer/stuck.html",
            title="Stuck transfers",
            stuck=list(stuck_transfers()[:200]),
            can_recover=may(request, "transfers.run_recovery"),
            last_run=last_run,
            opts=self.model._meta,
        )


class BooksBalanceFilter(admin.SimpleListFilter):
    title = "outcome"
    parameter_name = "balanced"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1", "books balance"), ("0", "discrepancies found")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(ok=self.value() == "1") if self.value() in ("0", "1") else queryset


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "finished_at", "outcome", "discrepancy_count", "triggered_by")
    list_filter = (BooksBalanceFilter,)
    fields = ("started_at", "finished_at", "outcome", "discrepancy_count", "triggered_by", "report")
    readonly_fields = fields
    change_list_template = "admin/transfers/reconciliationrun/change_list.html"

    @admin.display(description="outcome")
    def outcome(self, obj: ReconciliationRun) -> Any:
        return status_badge("Books balance", "ok") if obj.ok else status_badge("Discrepancies", "bad")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [path("check/", wrap(self.check_view), name="transfers_reconciliationrun_check"), *super().get_urls()]

    def check_view(self, request: HttpRequest) -> HttpResponse:
        """ "Check the books": reconcile every ledger and verify the audit trail's hash chain, now,
        and say what was found. Reads only (it records the run and the verification, as the
        scheduled checks do); for whoever may read reconciliations (supervisors, auditors)."""
        require_perm(request, "transfers.view_reconciliationrun")
        books = chain = None
        if request.method == "POST":
            actor = admin_actor(request)
            books = reconciliation_run(actor=actor)
            chain = audit_chain_check()
            audit_event_record(
                actor=actor,
                action="books.checked",
                object_type="reconciliation",
                object_id=books.started_at.isoformat(),
                changes={
                    "books_balance": books.ok,
                    "discrepancies": len(books.discrepancies),
                    "chain_intact": chain.ok,
                },
            )
        return backoffice_render(
            request,
            template="admin/transfers/reconciliationrun/check.html",
            title="Check the books",
            books=books,
            chain=chain,
            last_run=ReconciliationRun.objects.order_by("-started_at").first(),
            chain_head=AuditChainHead.objects.filter(pk=1).first(),
            opts=self.model._meta,
        )


from transfers import admin_approvals  # noqa: E402,F401  (the queue registers itself)
