"""The four-eyes queue: the requests that wait for a supervisor, each with what was checked, and
their decision one by one or several at once (``transfers.approvals`` does each)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from accounts.selectors import accounts_by_number
from backoffice.display import account_no, in_words, local_time, money, short_id
from backoffice.forms import ReasonForm
from backoffice.pages import admin_actor, may, person, require_perm, service_error
from bankcore.actors import CHANNEL_WORDS
from bankcore.errors import ApplicationError
from transfers.admin_batches import bulk_page
from transfers.admin_rows import ReadOnlyAdmin
from transfers.approvals import approval_approve, approval_execute, approval_reject, approval_withdraw, is_checker
from transfers.models import Approval, Transfer


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


def pending_approvals_count(user: Any) -> int:
    """Requests this user may decide: others' that wait (none for who may not approve)."""
    if not user.has_perm("transfers.view_approval") or not is_checker(user):
        return 0
    return Approval.objects.filter(status=Approval.Status.PENDING).exclude(Q(maker=user)).count()


def own_requests_count(user: Any) -> int:
    """This user's own requests that wait for a supervisor."""
    return Approval.objects.filter(status=Approval.Status.PENDING, maker=user).count()
