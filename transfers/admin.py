"""Transfer screens: the list and page of transfers (read-only), "New transfer", reversal, the
four-eyes queue, and "Stuck transfers" with recovery and the last reconciliation.

Every change goes through one service (``transfers.approvals``, ``transfers.services``,
``transfers.recovery``); the service's refusal is shown as the page's error message.
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
from django.utils.html import format_html

from accounts.admin import (
    AccountNumberField,
    AmountField,
    IdempotentForm,
    ReasonForm,
    account_link,
    admin_actor,
    backoffice_render,
    may,
    refusal_on_form,
    require_perm,
    sent_again,
    service_error,
)
from audit.services import audit_event_record
from bankcore.errors import ApplicationError
from transfers.approvals import approval_approve, approval_execute, approval_reject, money_movement_submit
from transfers.models import Approval, ReconciliationRun, Transfer
from transfers.recovery import transfers_recover
from transfers.services import transfer_reverse


class TransferForm(IdempotentForm):
    source_account = AccountNumberField(max_length=20, label="From account")
    destination_account = AccountNumberField(max_length=20, label="To account")
    amount = AmountField(help_text='For example "1,250.50".')
    reference = forms.CharField(max_length=140, required=False)


class ReverseForm(IdempotentForm):
    reference = forms.CharField(max_length=140, required=False)


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Rows are written by services only. Source and destination link to the accounts' pages."""

    actions = None

    @admin.display(description="source")
    def source(self, obj: Any) -> Any:
        return account_link(obj.source_account)

    @admin.display(description="destination")
    def destination(self, obj: Any) -> Any:
        return account_link(obj.destination_account)

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
    list_display = (
        "short_id",
        "created_at",
        "kind",
        "status",
        "source",
        "destination",
        "amount",
        "currency",
        "channel",
        "created_by",
    )
    list_filter = ("status", "kind", "channel", "source_ledger", "destination_ledger", "created_at")
    search_fields = ("=source_account", "=destination_account", "reference")
    ordering = ("-created_at",)
    list_select_related = ("created_by",)
    show_full_result_count = False
    fields = (
        "id",
        "kind",
        "status",
        "source",
        "source_ledger",
        "destination",
        "destination_ledger",
        "amount",
        "currency",
        "reference",
        "failure_code",
        "failure_detail",
        "reversal_of",
        "channel",
        "created_by",
        "created_at",
        "deadline",
        "committed_at",
        "finished_at",
    )
    readonly_fields = fields
    change_form_template = "admin/transfers/transfer/change_form.html"

    @admin.display(description="id")
    def short_id(self, obj: Transfer) -> str:
        return str(obj.id)[:8]

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Transfer], search_term: str):  # type: ignore[no-untyped-def]
        try:
            return queryset.filter(pk=uuid.UUID(search_term.strip())), False
        except ValueError:
            return super().get_search_results(request, queryset, search_term.replace(" ", ""))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return may(request, "transfers.add_transfer")

    def get_urls(self):  # type: ignore[no-untyped-def]
        wrap = self.admin_site.admin_view
        return [
            path("stuck/", wrap(self.stuck_view), name="transfers_transfer_stuck"),
            path("<path:object_id>/reverse/", wrap(self.reverse_view), name="transfers_transfer_reverse"),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        transfer = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if transfer is not None:
            context.update(
                can_reverse=may(request, "transfers.reverse_transfer")
                and transfer.status == Transfer.Status.COMPLETED
                and transfer.kind != Transfer.Kind.REVERSAL,
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
                        f"Transfer of {outcome.amount} {outcome.currency} is above the approval threshold of "
                        f"{settings.APPROVAL_THRESHOLD}: it waits for a supervisor's approval (request #{outcome.pk}).",
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
        return backoffice_render(
            request,
            template="admin/backoffice/form.html",
            title=f"Reverse {transfer}",
            form=form,
            opts=self.model._meta,
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
                summary = ", ".join(f"{n} {what}" for what, n in sorted(report.actions.items())) or "nothing to do"
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


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "created_at",
        "kind",
        "status",
        "amount",
        "currency",
        "source",
        "destination",
        "maker",
        "checker",
    )
    list_filter = ("status", "kind", "created_at")
    search_fields = ("=source_account", "=destination_account", "reference")
    ordering = ("-created_at",)
    list_select_related = ("maker", "checker")
    fields = (
        "id",
        "kind",
        "status",
        "source",
        "destination",
        "amount",
        "currency",
        "reference",
        "maker",
        "maker_channel",
        "created_at",
        "checker",
        "decided_at",
        "reason",
        "transfer_link",
        "failure_code",
        "failure_detail",
        "executed_at",
    )
    readonly_fields = fields
    change_form_template = "admin/transfers/approval/change_form.html"

    @admin.display(description="transfer")
    def transfer_link(self, obj: Approval) -> Any:
        if obj.transfer_id is None:
            return "—"
        url = reverse("admin:transfers_transfer_change", args=(obj.transfer_id,))
        return format_html('<a href="{}">{}</a>', url, obj.transfer_id)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # requests are made by the transfer and cash forms

    def get_urls(self):  # type: ignore[no-untyped-def]
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/decide/", wrap(self.decide_view), name="transfers_approval_decide"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # The queue opens on what waits; the filter shows the rest.
        if not request.GET and request.method == "GET":
            return HttpResponseRedirect(f"{request.path}?status__exact={Approval.Status.PENDING}")
        return super().changelist_view(request, extra_context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        approval = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if approval is not None:
            may_decide = may(request, "transfers.approve_approval")
            context.update(
                own_request=approval.maker_id == request.user.pk,
                can_decide=may_decide and approval.status == Approval.Status.PENDING,
                can_execute=may_decide and approval.status == Approval.Status.APPROVED,
                reject_form=ReasonForm(),
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
                messages.success(request, f"Approved and executed: transfer {approval.transfer_id}.")
            elif decision == "execute":
                approval = approval_execute(actor=actor, approval_id=unquote(object_id))
                messages.success(request, f"Executed: transfer {approval.transfer_id}.")
            elif decision == "reject":
                approval_reject(actor=actor, approval_id=unquote(object_id), reason=request.POST.get("reason", ""))
                messages.success(request, "Rejected; nothing was moved.")
            else:
                messages.error(request, "Choose approve or reject.")
        except ApplicationError as error:
            service_error(request, error)
        return back


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "finished_at", "ok", "discrepancy_count", "triggered_by")
    list_filter = ("ok",)
    fields = ("started_at", "finished_at", "ok", "discrepancy_count", "triggered_by", "report")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


def pending_approvals_count(user: Any) -> int:
    if not user.has_perm("transfers.view_approval"):
        return 0
    return Approval.objects.filter(status=Approval.Status.PENDING).exclude(Q(maker=user)).count()
