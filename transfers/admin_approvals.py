"""The four-eyes queue: the requests that wait for a supervisor, each with what was checked, and
their decision one by one or several at once (``transfers.approvals`` does each)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from accounts.admin import account_words
from accounts.models import Account
from accounts.selectors import accounts_by_number
from backoffice.display import account_no, in_words, local_time, money, short_id
from backoffice.forms import ReasonForm
from backoffice.pages import admin_actor, may, person, require_perm, service_error
from backoffice.review import Review, review_or_form
from bankcore.actors import CHANNEL_WORDS
from bankcore.errors import ApplicationError
from transfers.admin_batches import bulk_page
from transfers.admin_rows import ReadOnlyAdmin
from transfers.approval_records import approval_get
from transfers.approval_rules import is_checker
from transfers.approvals import (
    approval_approve,
    approval_execute,
    approval_reason_clean,
    approval_reject,
    approval_withdraw,
)
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

    def get_urls(self):
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
        """Approve, reject or carry out one request: the button shows what the decision will do,
        and only its confirmation (``backoffice.review``) carries it out."""
        require_perm(request, "transfers.approve_approval")
        back = HttpResponseRedirect(reverse("admin:transfers_approval_change", args=(unquote(object_id),)))
        if request.method != "POST" or "edit" in request.POST:
            return back
        form = DecisionForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Choose approve or reject.")
            return back
        decision = form.cleaned_data["decision"]
        try:
            approval = approval_get(approval_id=unquote(object_id))
            if decision == "reject":
                approval_reason_clean(form.cleaned_data["reason"])
        except ApplicationError as error:
            service_error(request, error)
            return back
        shown = review_or_form(
            request,
            form,
            review=lambda: decision_review(approval, decision, form.cleaned_data["reason"]),
            title=f"{DECISION_VERBS[decision]} request #{approval.pk}",
            opts=self.model._meta,
        )
        if shown is not None:
            return shown
        actor = admin_actor(request)
        try:
            if decision == "approve":
                approval = approval_approve(actor=actor, approval_id=approval.pk)
                messages.success(
                    request,
                    f"Approved: {money(approval.amount, approval.currency)} moved "
                    f"(transfer {short_id(approval.transfer_id)}).",
                )
            elif decision == "execute":
                approval = approval_execute(actor=actor, approval_id=approval.pk)
                messages.success(request, f"Executed: transfer {short_id(approval.transfer_id)}.")
            else:
                approval_reject(actor=actor, approval_id=approval.pk, reason=form.cleaned_data["reason"])
                messages.success(request, "Rejected; nothing was moved and the amount held is released.")
        except ApplicationError as error:
            service_error(request, error)
        return back

    def bulk_view(self, request: HttpRequest) -> HttpResponse:
        """Approve or reject the requests ticked in the queue, once the list and its totals are
        confirmed; then one by one, each one's outcome said (a request another supervisor decided
        meanwhile is refused, the others go on)."""
        require_perm(request, "transfers.approve_approval")
        back = HttpResponseRedirect(
            reverse("admin:transfers_approval_changelist") + f"?status__exact={Approval.Status.PENDING}"
        )
        if request.method != "POST" or "edit" in request.POST:
            return back
        form = BulkDecisionForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Tick the requests to decide, then approve or reject them.")
            return back
        ids, decision, reason = (form.cleaned_data[name] for name in ("approval", "decision", "reason"))
        if decision == "reject":
            try:
                approval_reason_clean(reason)
            except ApplicationError as error:
                service_error(request, error)
                return back
        verb = "Approve" if decision == "approve" else "Reject"
        shown = review_or_form(
            request,
            form,
            review=lambda: bulk_review(ids, decision, reason),
            title=f"{verb} {len(ids)} request{'s' if len(ids) != 1 else ''}",
            opts=self.model._meta,
        )
        if shown is not None:
            return shown
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
            messages.success(request, f"{'Approved' if decision == 'approve' else 'Rejected'}: {', '.join(done)}.")
        return back

    def withdraw_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The maker takes back their own request, once confirmed; the amount held is released."""
        back = HttpResponseRedirect(reverse("admin:transfers_approval_change", args=(unquote(object_id),)))
        if request.method != "POST" or "edit" in request.POST:
            return back
        try:
            approval = approval_get(approval_id=unquote(object_id))
        except ApplicationError as error:
            service_error(request, error)
            return back
        # Nothing to type: the confirmation is bound to the request's page, and to this user.
        form = forms.Form(request.POST)
        form.full_clean()
        shown = review_or_form(
            request,
            form,
            review=lambda: decision_review(approval, "withdraw"),
            title=f"Withdraw request #{approval.pk}",
            opts=self.model._meta,
        )
        if shown is not None:
            return shown
        try:
            approval_withdraw(actor=admin_actor(request), approval_id=approval.pk)
        except ApplicationError as error:
            service_error(request, error)
        else:
            messages.success(request, "Request withdrawn; nothing was moved and the amount held is released.")
        return back


class DecisionForm(forms.Form):
    """A supervisor's decision on one request; its confirmation is bound to it and its reason."""

    decision = forms.ChoiceField(choices=[("approve", "approve"), ("reject", "reject"), ("execute", "execute")])
    # Judged by the service (``approval_reason_clean``), which says why a reason is none.
    reason = forms.Field(required=False)

    def clean_reason(self) -> str:
        # Its spaces folded, as it is kept: the confirmation page's hidden copy and the textarea
        # it came from (line breaks and all) then say the same.
        return " ".join(str(self.cleaned_data["reason"] or "").split())


class ApprovalIdsField(forms.Field):
    """The requests ticked in the queue: their numbers, in order, at most a hundred."""

    widget = hidden_widget = forms.MultipleHiddenInput

    def to_python(self, value: Any) -> list[str]:
        return [str(pk) for pk in value or [] if str(pk).isdigit()][:100]


class BulkDecisionForm(DecisionForm):
    """Several requests approved or rejected at once (never carried out: each approval executes)."""

    approval = ApprovalIdsField()
    decision = forms.ChoiceField(choices=[("approve", "approve"), ("reject", "reject")])


# How the confirmation page names each decision.
DECISION_VERBS = {"approve": "Approve", "reject": "Reject", "execute": "Carry out", "withdraw": "Withdraw"}


def decision_review(approval: Approval, decision: str, reason: str = "") -> Review:
    """What confirming ``decision`` on ``approval`` does: the movement with its names, amount and
    the balances it leaves, and what the approval page checked. What the service would refuse
    (a request decided meanwhile, a frozen account) is said as a warning; the refusal comes from
    the service when confirmed, as always."""
    amount = money(approval.amount, approval.currency)
    numbers = [n for n in (approval.source_account, approval.destination_account) if n]
    found = accounts_by_number(numbers=numbers)
    rows = [("Request", f"#{approval.pk}: {approval.get_kind_display().lower()} made by {person(approval.maker)}")]
    for label, number in (("From", approval.source_account), ("To", approval.destination_account)):
        if number:
            rows.append((label, f"{account_words(number, found.get(number))} — {account_no(number)}"))
    rows.append(("Amount", amount))
    checks = approval_checks(approval)
    warnings = [check.words for check in checks if not check.ok]
    expected = Approval.Status.APPROVED if decision == "execute" else Approval.Status.PENDING
    if approval.status != expected:
        warnings.insert(0, f"This request is {approval.get_status_display().lower()}: it will be refused.")
    if decision in ("approve", "execute"):
        rows.extend(_balances_after(approval, found))
        rows.extend(("Checked now", check.words) for check in checks if check.ok)
        sides = [
            f"{word} {account_words(n, found.get(n))}"
            for word, n in (("from", approval.source_account), ("to", approval.destination_account))
            if n
        ]
        headline = " ".join([f"Move {amount}", *sides])
        note = "The money moves as soon as you confirm."
    elif decision == "reject":
        rows.append(("Reason", approval_reason_clean(reason)))
        headline = f"Reject request #{approval.pk}: nothing moves"
        note = "The request is closed and the amount held released as soon as you confirm."
    else:
        headline = f"Withdraw your request #{approval.pk}: nothing moves"
        note = "The request is closed and the amount held released as soon as you confirm."
    return Review(headline=headline, rows=rows, warnings=warnings, note=note)


def _balances_after(approval: Approval, found: dict[str, Any]) -> list[tuple[str, str]]:
    """The customers' balances once the request is carried out (a cash side's is the till's)."""
    rows = []
    for number, sign in ((approval.source_account, -1), (approval.destination_account, 1)):
        account = found.get(number) if number else None
        if account is not None and account.kind == Account.Kind.CUSTOMER:
            after = account.posted + sign * approval.amount
            rows.append((f"{account.holder}: balance after", money(after, account.currency)))
    return rows


def bulk_review(ids: list[str], decision: str, reason: str) -> Review:
    """The requests ticked, each as its movement, with the total by currency and what will be
    refused (a request decided meanwhile, or none by that number)."""
    approvals = {str(a.pk): a for a in Approval.objects.filter(pk__in=ids).select_related("maker")}
    found = accounts_by_number(
        numbers=[n for a in approvals.values() for n in (a.source_account, a.destination_account) if n]
    )
    rows: list[tuple[str, str]] = []
    warnings: list[str] = []
    totals: defaultdict[str, Decimal] = defaultdict(Decimal)
    for pk in ids:
        approval = approvals.get(pk)
        if approval is None:
            warnings.append(f"There is no request #{pk}: it will be refused.")
            continue
        sides = " → ".join(
            account_words(n, found.get(n)) for n in (approval.source_account, approval.destination_account) if n
        )
        rows.append(
            (f"#{pk}", f"{approval.get_kind_display()} of {money(approval.amount, approval.currency)}: {sides}")
        )
        if approval.status != Approval.Status.PENDING:
            warnings.append(f"Request #{pk} is {approval.get_status_display().lower()}: it will be refused.")
        else:
            totals[approval.currency] += approval.amount
    rows.extend(("Total", money(total, currency)) for currency, total in sorted(totals.items()))
    count = f"{len(ids)} request{'s' if len(ids) != 1 else ''}"
    if decision == "approve":
        headline, note = f"Approve {count}: their money moves", "Each one moves as soon as you confirm."
    else:
        rows.append(("Reason", approval_reason_clean(reason)))
        headline = f"Reject {count}: nothing moves"
        note = "Each is closed and its amount held released as soon as you confirm."
    return Review(headline=headline, rows=rows, warnings=warnings, note=note)


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
