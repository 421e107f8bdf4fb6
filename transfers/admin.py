"""Transfer screens: the list and page of transfers (read-only), "New transfer", reversal, the
four-eyes queue, and "Stuck transfers" with recovery and the last reconciliation.

Every change goes through one service (``transfers.approvals``, ``transfers.services``,
``transfers.recovery``); the service's refusal is shown as the page's error message.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.admin import (
    AccountNumberField,
    AmountField,
    IdempotentForm,
    ReasonForm,
    account_link,
    account_words,
    admin_actor,
    backoffice_render,
    may,
    person,
    refusal_on_form,
    require_perm,
    review_or_form,
    sent_again,
    service_error,
)
from accounts.selectors import accounts_by_number
from audit.chain import audit_chain_check
from audit.models import AuditChainHead
from audit.services import audit_event_record
from bankcore.actors import Channel
from bankcore.display import account_no, in_words, local_time, money, short_id, status_badge
from bankcore.errors import ApplicationError
from transfers.admin_batches import bulk_page, bulk_urls
from transfers.approvals import (
    approval_approve,
    approval_execute,
    approval_reject,
    approval_withdraw,
    is_checker,
    money_movement_submit,
)
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


CHANNEL_WORDS = {
    Channel.ADMIN: "back office",
    Channel.API: "partner system (API)",
    Channel.COMMAND: "operator command",
    Channel.TASK: "automatic task",
    Channel.SYSTEM: "the system",
}
APPROVAL_TONES: dict[str, str] = {
    Approval.Status.PENDING: "wait",
    Approval.Status.APPROVED: "wait",
    Approval.Status.EXECUTED: "ok",
    Approval.Status.REJECTED: "bad",
    Approval.Status.FAILED: "bad",
    Approval.Status.WITHDRAWN: "neutral",
    Approval.Status.EXPIRED: "neutral",
}


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


def live_reversals(transfer: Transfer) -> QuerySet[Transfer]:
    return Transfer.objects.filter(reversal_of=transfer).exclude(status=Transfer.Status.ABORTED)


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


HOLDING = (Approval.Status.PENDING, Approval.Status.APPROVED)


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
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


def stuck_transfers() -> QuerySet[Transfer]:
    """Transfers not final past their deadline: recovery's work, or a sign it is not running."""
    return Transfer.objects.filter(
        status__in=[Transfer.Status.PENDING, Transfer.Status.COMMITTED], deadline__lt=timezone.now()
    ).order_by("deadline")


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdmin):
    list_display = ("short_id", "created_at", "kind", "status_display", "source", "destination", "amount_display")
    list_filter = ("status", "kind", "created_at")
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

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Transfer], search_term: str):  # type: ignore[no-untyped-def]
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
        return (
            super()
            .get_queryset(request)
            .annotate(
                is_reversed=Exists(
                    Transfer.objects.filter(reversal_of=OuterRef("pk")).exclude(status=Transfer.Status.ABORTED)
                ),
                is_held=Exists(Approval.objects.filter(transfer=OuterRef("pk"), status__in=HOLDING)),
            )
        )

    def get_urls(self):  # type: ignore[no-untyped-def]
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

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
        require_perm(request, "transfers.add_transfer")
        initial = {"source_account": request.GET.get("source", "")}
        form = TransferForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            shown = review_or_form(
                request,
                form,
                kind="transfer",
                source=data["source_account"],
                destination=data["destination_account"],
                title="New transfer",
                opts=self.model._meta,
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
        return backoffice_render(
            request,
            template="admin/backoffice/form.html",
            title="New transfer",
            form=form,
            opts=self.model._meta,
            threshold=settings.APPROVAL_THRESHOLD,
            reviewed=True,
        )

    # --- Reverse ---------------------------------------------------------------------------

    def reverse_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        require_perm(request, "transfers.reverse_transfer")
        transfer = self.get_object(request, unquote(object_id))
        if transfer is None:
            messages.error(request, f"No transfer {object_id}.")
            return HttpResponseRedirect(reverse("admin:transfers_transfer_changelist"))
        form = ReverseForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
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
        found = accounts_by_number(numbers=[transfer.source_account, transfer.destination_account])
        payer = account_words(transfer.destination_account, found.get(transfer.destination_account))
        payee = account_words(transfer.source_account, found.get(transfer.source_account))
        return backoffice_render(
            request,
            template="admin/backoffice/form.html",
            title=f"Reverse transfer {short_id(transfer.pk)}",
            form=form,
            opts=self.model._meta,
            explain=f"Reversing moves {money(transfer.amount, transfer.currency)} back from {payer} to {payee}, "
            "as a new transfer linked to this one. It can be done once.",
            submit_label="Reverse the transfer",
        )

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


class MineFilter(admin.SimpleListFilter):
    """A teller's own requests."""

    title = "made by"
    parameter_name = "mine"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1", "me")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(maker=request.user) if self.value() == "1" else queryset


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = (
        "select",
        "number",
        "created_at",
        "kind",
        "status_display",
        "amount_display",
        "source",
        "destination",
        "maker_name",
    )
    list_display_links = ("number",)
    list_filter = ("status", MineFilter, "kind", "created_at")
    search_fields = ("=source_account", "=destination_account", "reference")
    ordering = ("-created_at",)
    list_select_related = ("maker", "checker")
    fields = (
        "number",
        "kind",
        "status_display",
        "source",
        "destination",
        "amount_display",
        "reference",
        "maker_name",
        "made_through",
        "created_at",
        "checker_name",
        "decided_at",
        "reason",
        "transfer_link",
        "refusal",
        "executed_at",
    )
    readonly_fields = fields
    change_form_template = "admin/transfers/approval/change_form.html"
    change_list_template = "admin/transfers/approval/change_list.html"

    @admin.display(description="request", ordering="id")
    def number(self, obj: Approval) -> str:
        return f"#{obj.pk}"

    @admin.display(description="")
    def select(self, obj: Approval) -> Any:
        if obj.status != Approval.Status.PENDING:
            return ""
        return format_html(
            '<input type="checkbox" name="approval" value="{}" form="bulk-decide" aria-label="select request {}">',
            obj.pk,
            obj.pk,
        )

    @admin.display(description="made by", ordering="maker")
    def maker_name(self, obj: Approval) -> str:
        return person(obj.maker)

    @admin.display(description="decided by")
    def checker_name(self, obj: Approval) -> str:
        return person(obj.checker)

    @admin.display(description="made through")
    def made_through(self, obj: Approval) -> str:
        return CHANNEL_WORDS.get(obj.maker_channel, obj.maker_channel)

    @admin.display(description="why it failed")
    def refusal(self, obj: Approval) -> str:
        return in_words(obj.failure_detail) if obj.failure_detail else "—"

    @admin.display(description="transfer")
    def transfer_link(self, obj: Approval) -> Any:
        if obj.transfer_id is None:
            return "—"
        url = reverse("admin:transfers_transfer_change", args=(obj.transfer_id,))
        return format_html('<a href="{}">{}</a>', url, short_id(obj.transfer_id))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # requests are made by the transfer and cash forms

    def get_urls(self):  # type: ignore[no-untyped-def]
        wrap = self.admin_site.admin_view
        return [
            path("decide-selected/", wrap(self.bulk_view), name="transfers_approval_bulk"),
            path("<path:object_id>/decide/", wrap(self.decide_view), name="transfers_approval_decide"),
            path("<path:object_id>/withdraw/", wrap(self.withdraw_view), name="transfers_approval_withdraw"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # The queue opens on what waits; the filter shows the rest.
        if not request.GET and request.method == "GET":
            return HttpResponseRedirect(f"{request.path}?status__exact={Approval.Status.PENDING}")
        context = {
            **(extra_context or {}),
            "can_decide": may(request, "transfers.approve_approval"),
            "reject_form": ReasonForm(),
        }
        return super().changelist_view(request, context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        approval = self.get_object(request, unquote(object_id))
        if approval is not None and approval.kind == Approval.Kind.BATCH:  # its lines are on its own page
            return HttpResponseRedirect(bulk_page(approval))
        context = dict(extra_context or {})
        if approval is not None:
            context["subtitle"] = (
                f"Request #{approval.pk}: {approval.get_kind_display().lower()} of "
                f"{money(approval.amount, approval.currency)}"
            )
            may_decide = may(request, "transfers.approve_approval")
            own = approval.maker_id == request.user.pk
            context.update(
                own_request=own,
                can_decide=may_decide and approval.status == Approval.Status.PENDING,
                can_execute=may_decide and approval.status == Approval.Status.APPROVED,
                can_withdraw=own and approval.status == Approval.Status.PENDING,
                reject_form=ReasonForm(),
                checks=approval_checks(approval),
            )
        return super().change_view(request, object_id, form_url, context)

    def decide_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        require_perm(request, "transfers.approve_approval")
        back = HttpResponseRedirect(reverse("admin:transfers_approval_change", args=(unquote(object_id),)))
        if request.method != "POST":
            return back
        actor = admin_actor(request)
        decision = request.POST.get("decision")
        try:
            if decision == "approve":
                approval = approval_approve(actor=actor, approval_id=unquote(object_id))
                messages.success(
                    request,
                    f"Approved: {money(approval.amount, approval.currency)} moved "
                    f"(transfer {short_id(approval.transfer_id)}).",
                )
            elif decision == "execute":
                approval = approval_execute(actor=actor, approval_id=unquote(object_id))
                messages.success(request, f"Executed: transfer {short_id(approval.transfer_id)}.")
            elif decision == "reject":
                approval_reject(actor=actor, approval_id=unquote(object_id), reason=request.POST.get("reason", ""))
                messages.success(request, "Rejected; nothing was moved and the amount held is released.")
            else:
                messages.error(request, "Choose approve or reject.")
        except ApplicationError as error:
            service_error(request, error)
        return back

    def bulk_view(self, request: HttpRequest) -> HttpResponse:
        """Approve or reject the requests ticked in the queue, one by one; each one's outcome is
        said (a request another supervisor decided meanwhile is refused, the others go on)."""
        require_perm(request, "transfers.approve_approval")
        back = HttpResponseRedirect(
            reverse("admin:transfers_approval_changelist") + f"?status__exact={Approval.Status.PENDING}"
        )
        if request.method != "POST":
            return back
        ids = [pk for pk in request.POST.getlist("approval") if pk.isdigit()][:100]
        decision, reason = request.POST.get("decision"), request.POST.get("reason", "")
        if not ids or decision not in ("approve", "reject"):
            messages.error(request, "Tick the requests to decide, then approve or reject them.")
            return back
        actor, done = admin_actor(request), []
        for pk in ids:
            try:
                if decision == "approve":
                    approval_approve(actor=actor, approval_id=pk)
                else:
                    approval_reject(actor=actor, approval_id=pk, reason=reason)
                done.append(f"#{pk}")
            except ApplicationError as error:
                messages.error(request, f"Request #{pk}: {in_words(error.detail)} ({error.code})")
        if done:
            verb = "Approved" if decision == "approve" else "Rejected"
            messages.success(request, f"{verb}: {', '.join(done)}.")
        return back

    def withdraw_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The maker takes back their own request; the amount held is released."""
        back = HttpResponseRedirect(reverse("admin:transfers_approval_change", args=(unquote(object_id),)))
        if request.method != "POST":
            return back
        try:
            approval_withdraw(actor=admin_actor(request), approval_id=unquote(object_id))
        except ApplicationError as error:
            service_error(request, error)
        else:
            messages.success(request, "Request withdrawn; nothing was moved and the amount held is released.")
        return back


@dataclass(frozen=True)
class Check:
    """One line of what a supervisor reads before deciding: what was checked, and how it stands."""

    ok: bool
    words: str


def approval_checks(approval: Approval) -> list[Check]:
    """Where a request stands now: the accounts' states, the amount held and until when, what the
    account debited has left beside it."""
    if approval.status != Approval.Status.PENDING:
        return []
    numbers = [n for n in (approval.source_account, approval.destination_account) if n]
    found = accounts_by_number(numbers=numbers)
    checks = []
    for number in numbers:
        account = found.get(number)
        side = "From" if number == approval.source_account else "To"
        if account is None:
            checks.append(Check(False, f"{side}: account {account_no(number)} not found."))
        elif account.status != "active":
            checks.append(
                Check(False, f"{side}: {account.holder}'s account is {account.get_status_display().lower()}.")
            )
        else:
            checks.append(Check(True, f"{side}: {account.holder}'s account is active."))
    hold = Transfer.objects.filter(pk=approval.transfer_id).first() if approval.transfer_id else None
    if hold is not None and hold.status == Transfer.Status.PENDING:
        held_on = found.get(approval.source_account)
        left = f"; {money(held_on.available, held_on.currency)} left available beside it" if held_on else ""
        checks.append(
            Check(
                True,
                f"{money(approval.amount, approval.currency)} held until {local_time(hold.deadline)}{left}.",
            )
        )
    elif approval.kind != Approval.Kind.DEPOSIT:
        checks.append(Check(False, "No amount is held for this request: funds are checked when it executes."))
    return checks


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

    def get_urls(self):  # type: ignore[no-untyped-def]
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


def pending_approvals_count(user: Any) -> int:
    """Requests this user may decide: others' that wait (none for who may not approve)."""
    if not user.has_perm("transfers.view_approval") or not is_checker(user):
        return 0
    return Approval.objects.filter(status=Approval.Status.PENDING).exclude(Q(maker=user)).count()


def own_requests_count(user: Any) -> int:
    """This user's own requests that wait for a supervisor."""
    return Approval.objects.filter(status=Approval.Status.PENDING, maker=user).count()
