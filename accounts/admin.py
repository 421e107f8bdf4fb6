"""The tellers' account screens.

Accounts live in every ledger database, and an admin changelist is one queryset on one database:
the list shows one ledger at a time (the "ledger" filter, ``?ledger=db2``, the first by default),
while "Find account" searches by number or holder in every ledger at once. An account's page is
addressed by its number, which carries its ledger, so links never need to say which database.

Nothing here edits a row by hand: the page is read-only, and money and state change only through
the forms below, each calling one service (``accounts.services``, ``transfers.approvals``).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from accounts.models import Account, Entry
from accounts.selectors import accounts_search
from accounts.services import (
    account_close,
    account_freeze,
    account_open,
    account_unfreeze,
    opening_deposit_key,
    opening_deposit_parse,
)
from audit.roles import SUPERUSER_WITHOUT_ROLE, role_permits
from bankcore.actors import Actor, Channel, actor_from_request
from bankcore.errors import ApplicationError

admin.site.site_header = "bankcore back office"
admin.site.site_title = "bankcore back office"
admin.site.index_title = "Back office"

STATEMENT_PAGE_SIZE = 25
FIND_LIMIT = 100


# --- shared by the back office's form views (accounts and transfers) -----------------------------


def admin_actor(request: HttpRequest) -> Actor:
    return actor_from_request(request, channel=Channel.ADMIN)


def may(request: HttpRequest, perm: str) -> bool:
    """Whether the user holds ``perm`` to act in the back office. Reading (``view_…``) follows
    Django's permissions, as the admin's own lists do; acting needs a role: a superuser's blanket
    permissions move no money and change no account (``audit.roles.role_permits``)."""
    if perm.split(".", 1)[-1].startswith("view_"):
        return bool(request.user.has_perm(perm))
    return role_permits(request.user, perm)


def require_perm(request: HttpRequest, *perms: str) -> None:
    """Refuse (403, nothing done) unless the user may do all that is named (see ``may``); a
    superuser outside the roles is told why."""
    if not all(may(request, perm) for perm in perms):
        if request.user.is_superuser:
            raise PermissionDenied(SUPERUSER_WITHOUT_ROLE)
        raise PermissionDenied


def backoffice_render(
    request: HttpRequest, *, template: str, title: str, status: int = 200, **context: Any
) -> TemplateResponse:
    page = {**admin.site.each_context(request), "title": title, **context}
    return TemplateResponse(request, template, page, status=status)


def service_error(request: HttpRequest, error: ApplicationError) -> None:
    """A service's refusal, as the teller reads it, on a page that has no form to show it on."""
    messages.error(request, f"{error.detail} ({error.code})")


# The field a service's refusal is about, by its code; an account's refusal names its side.
REFUSAL_FIELDS: dict[str, str] = {
    "invalid_amount": "amount",
    "amount_above_maximum": "amount",
    "insufficient_funds": "amount",
    "daily_limit_exceeded": "amount",
    "invalid_reference": "reference",
    "same_account": "destination_account",
    "invalid_holder": "holder",
    "invalid_currency": "currency",
}
ACCOUNT_REFUSALS = {
    "invalid_account_number",
    "account_not_found",
    "account_frozen",
    "account_closed",
    "internal_account",
    "currency_mismatch",
}


def refusal_on_form(form: forms.Form, error: ApplicationError) -> None:
    """A service's refusal beside the field it is about, in words; its code stays on the page,
    small, for whoever reports it. One about no field of the form goes above the fields."""
    field = REFUSAL_FIELDS.get(error.code)
    if error.code in ACCOUNT_REFUSALS:
        field = "destination_account" if "destination" in error.detail else "source_account"
    if field == "amount" and "amount" not in form.fields and "opening_deposit" in form.fields:
        field = "opening_deposit"
    message = forms.ValidationError(error.detail.replace("%", "%%"), code=error.code, params={"shown_code": error.code})
    form.add_error(field if field in form.fields else None, message)


def sent_again(outcome: Any) -> str:
    """What a message adds when its form's key had been seen: the page was sent again, nothing moved
    twice."""
    return " — this form had been sent already; nothing was done twice" if getattr(outcome, "replayed", False) else ""


class IdempotentForm(forms.Form):
    """A hidden nonce minted when the form is shown. The idempotency key is the nonce and a digest
    of what the form says: sent twice as it is (a double click, a reload) it moves money once;
    corrected after a refusal and sent again, it is a new request."""

    idempotency_key = forms.CharField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", uuid.uuid4().hex)

    def key(self) -> str | None:
        nonce = self.cleaned_data.get("idempotency_key")
        if not nonce:
            return None
        content = {name: str(value) for name, value in self.cleaned_data.items() if name != "idempotency_key"}
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
        return f"{nonce}.{digest}"


# Digits grouped by threes as a teller types them: "1,000.00", "1 000.00" (a space or a no-break space).
GROUPED_AMOUNT = re.compile(r"\d{1,3}(?:([, \u00a0])\d{3})(?:\1\d{3})*(?:\.\d+)?")
ACCOUNT_SEPARATORS = str.maketrans("", "", " -\u00a0")


class AmountField(forms.CharField):
    """An amount as typed: grouping separators dropped where they group digits by three; the rest
    is the service's to judge (``bankcore.money.money_parse``)."""

    def to_python(self, value: Any) -> str:
        text = str(super().to_python(value))
        return re.sub(r"[, \u00a0]", "", text) if GROUPED_AMOUNT.fullmatch(text) else text


class AccountNumberField(forms.CharField):
    """An account number as typed, in groups with spaces or dashes as on paper."""

    def to_python(self, value: Any) -> str:
        return str(super().to_python(value)).translate(ACCOUNT_SEPARATORS)


# --- forms -----------------------------------------------------------------------------------


def _ledger_choices() -> list[tuple[str, str]]:
    return [(alias, f"{alias} (ledger {code})") for alias, code in settings.LEDGERS.items()]


class OpenAccountForm(IdempotentForm):
    ledger = forms.ChoiceField(choices=_ledger_choices)
    holder = forms.CharField(max_length=200)
    currency = forms.CharField(max_length=3, initial=lambda: settings.DEFAULT_CURRENCY)
    opening_deposit = AmountField(
        required=False, help_text="Optional cash paid in now, e.g. 500.00 (above the approval threshold it waits)."
    )

    def clean_opening_deposit(self) -> str:
        """Checked before the account is opened (``opening_deposit_parse``); booked after it."""
        value = self.cleaned_data["opening_deposit"]
        if value:
            try:
                opening_deposit_parse(value)
            except ApplicationError as refused:
                raise forms.ValidationError(f"{refused.detail} ({refused.code})", code=refused.code) from None
        return str(value)


class CashForm(IdempotentForm):
    amount = AmountField(help_text='For example "1,250.50".')
    reference = forms.CharField(max_length=140, required=False)


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Reason"})
    )


# --- the changelist: one ledger at a time ----------------------------------------------------


def request_ledger(request: HttpRequest) -> str:
    ledger = request.GET.get("ledger", "")
    return ledger if ledger in settings.LEDGERS else next(iter(settings.LEDGERS))


class LedgerFilter(admin.SimpleListFilter):
    """Which ledger the list shows. There is no "All": the list is one query on one database."""

    title = "ledger"
    parameter_name = "ledger"

    def __init__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        self.current = request_ledger(request)
        super().__init__(request, *args, **kwargs)

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return _ledger_choices()

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset  # AccountAdmin.get_queryset already chose the database

    def choices(self, changelist: Any):  # type: ignore[no-untyped-def]
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.current == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }


class AccountChangeList(ChangeList):
    def url_for_result(self, result: Any) -> str:
        return reverse(
            "admin:accounts_account_change", args=(result.number,), current_app=self.model_admin.admin_site.name
        )


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("number", "holder", "kind", "status", "currency", "posted", "pending_debits", "available_display")
    list_filter = (LedgerFilter, "status", "currency", "kind")
    ordering = ("pk",)
    actions = None
    list_per_page = 50
    show_full_result_count = False
    fields = (
        "number",
        "ledger_display",
        "holder",
        "kind",
        "currency",
        "status",
        "allow_overdraft",
        "posted",
        "pending_debits",
        "pending_credits",
        "available_display",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields
    change_list_template = "admin/accounts/account/change_list.html"
    change_form_template = "admin/accounts/account/change_form.html"

    @admin.display(description="ledger")
    def ledger_display(self, obj: Account) -> str:
        return f"{obj.ledger} (code {settings.LEDGERS.get(obj.ledger, '?')})"

    @admin.display(description="available")
    def available_display(self, obj: Account) -> Any:
        return obj.available

    # One database per request: the changelist's ledger filter, or the number in the URL.
    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        return Account.objects.using(request_ledger(request)).all()

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AccountChangeList

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Account | None:
        from accounts.selectors import account_get

        try:
            return account_get(number=unquote(object_id))
        except ApplicationError:
            return None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return may(request, "accounts.add_account")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # money and state change only through the service forms

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self):  # type: ignore[no-untyped-def]
        wrap = self.admin_site.admin_view
        return [
            path("find/", wrap(self.find_view), name="accounts_account_find"),
            path("<str:number>/deposit/", wrap(self.cash_view), {"kind": "deposit"}, name="accounts_account_deposit"),
            path(
                "<str:number>/withdraw/", wrap(self.cash_view), {"kind": "withdrawal"}, name="accounts_account_withdraw"
            ),
            path("<str:number>/state/<str:action>/", wrap(self.state_view), name="accounts_account_state"),
            *super().get_urls(),
        ]

    # --- the account page ------------------------------------------------------------------

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        from transfers.models import Approval, Transfer

        account = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if account is not None and self.has_view_permission(request, account):
            entries = Entry.objects.using(account.ledger).filter(account=account).order_by("-created_at", "-id")
            page = Paginator(entries, STATEMENT_PAGE_SIZE).get_page(request.GET.get("page"))
            number = str(account.number)
            transfers = Transfer.objects.filter(Q(source_account=number) | Q(destination_account=number)).order_by(
                "-created_at"
            )[:50]
            waiting = Approval.objects.filter(
                Q(source_account=number) | Q(destination_account=number), status=Approval.Status.PENDING
            ).order_by("-created_at")
            customer = account.kind == Account.Kind.CUSTOMER
            context.update(
                account=account,
                statement=page,
                transfers=transfers,
                waiting_approvals=waiting,
                can_cash=customer and may(request, "accounts.handle_cash"),
                can_transfer=customer and may(request, "transfers.add_transfer"),
                can_freeze=customer and may(request, "accounts.freeze_account"),
                can_close=customer and may(request, "accounts.close_account"),
            )
        return super().change_view(request, object_id, form_url, context)

    # --- find in every ledger --------------------------------------------------------------

    def find_view(self, request: HttpRequest) -> HttpResponse:
        require_perm(request, "accounts.view_account")
        query = request.GET.get("q", "").strip()
        narrow = {name: request.GET.get(name, "").strip()[:16] for name in ("status", "currency", "kind")}
        results = accounts_search(query=query, limit=FIND_LIMIT + 1, **narrow) if query else []
        return backoffice_render(
            request,
            template="admin/accounts/account/find.html",
            title="Find account",
            query=query,
            results=results[:FIND_LIMIT],
            truncated=len(results) > FIND_LIMIT,
            ledger_count=len(settings.LEDGERS),
            statuses=Account.Status.choices,
            kinds=Account.Kind.choices,
            opts=self.model._meta,
            filters=narrow,
        )

    # --- open an account -------------------------------------------------------------------

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
        require_perm(request, "accounts.add_account")
        form = OpenAccountForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            actor = admin_actor(request)
            data = form.cleaned_data
            key = form.key()
            try:
                account = account_open(
                    actor=actor,
                    ledger=data["ledger"],
                    holder=data["holder"],
                    currency=data["currency"],
                    idempotency_key=key,
                )
            except ApplicationError as error:
                refusal_on_form(form, error)
            else:
                messages.success(request, f"Account {account.number} opened for {account.holder}{sent_again(account)}.")
                if data["opening_deposit"]:
                    # Its own key, derived from the opening's: submitted again, it is booked once.
                    self._cash_submit(
                        request,
                        actor,
                        "deposit",
                        str(account.number),
                        data["opening_deposit"],
                        "Opening deposit",
                        opening_deposit_key(key) if key is not None else None,
                    )
                return HttpResponseRedirect(reverse("admin:accounts_account_change", args=(account.number,)))
        return backoffice_render(
            request, template="admin/backoffice/form.html", title="Open an account", form=form, opts=self.model._meta
        )

    # --- cash at the counter ---------------------------------------------------------------

    def _cash_submit(
        self,
        request: HttpRequest,
        actor: Actor,
        kind: str,
        number: str,
        amount: str,
        reference: str,
        key: str | None,
        form: forms.Form | None = None,
    ) -> bool:
        """Book a cash movement (or ask for its approval); a refusal goes on ``form`` if given,
        otherwise into the page's messages."""
        from transfers.approvals import money_movement_submit
        from transfers.models import Approval

        try:
            outcome = money_movement_submit(
                actor=actor,
                user=request.user,
                kind=kind,
                amount=amount,
                source_account=number if kind == "withdrawal" else "",
                destination_account=number if kind == "deposit" else "",
                reference=reference,
                idempotency_key=key,
            )
        except ApplicationError as error:
            if form is None:
                service_error(request, error)
            else:
                refusal_on_form(form, error)
            return False
        label = "Cash deposit" if kind == "deposit" else "Cash withdrawal"
        if isinstance(outcome, Approval):
            messages.warning(
                request,
                f"{label} of {outcome.amount} {outcome.currency} is above the approval threshold of "
                f"{settings.APPROVAL_THRESHOLD}: it waits for a supervisor's approval (request #{outcome.pk}).",
            )
        else:
            messages.success(
                request,
                f"{label} of {outcome.amount} {outcome.currency} booked ({outcome.status}){sent_again(outcome)}.",
            )
        return True

    def cash_view(self, request: HttpRequest, number: str, kind: str) -> HttpResponse:
        require_perm(request, "accounts.handle_cash")
        account = self.get_object(request, number)
        if account is None:
            messages.error(request, f"No account {number}.")
            return HttpResponseRedirect(reverse("admin:accounts_account_find"))
        form = CashForm(request.POST or None)
        valid = request.method == "POST" and form.is_valid()
        if valid:
            data = form.cleaned_data
            if self._cash_submit(
                request,
                admin_actor(request),
                kind,
                str(account.number),
                data["amount"],
                data["reference"],
                form.key(),
                form,
            ):
                return HttpResponseRedirect(reverse("admin:accounts_account_change", args=(account.number,)))
        title = ("Cash deposit to " if kind == "deposit" else "Cash withdrawal from ") + str(account)
        return backoffice_render(
            request,
            template="admin/backoffice/form.html",
            title=title,
            form=form,
            account=account,
            opts=self.model._meta,
            status=200 if request.method == "GET" or valid else 400,
        )

    # --- freeze, unfreeze, close -----------------------------------------------------------

    STATE_ACTIONS = {
        "freeze": ("accounts.freeze_account", account_freeze, "frozen"),
        "unfreeze": ("accounts.freeze_account", account_unfreeze, "unfrozen"),
        "close": ("accounts.close_account", account_close, "closed"),
    }

    def state_view(self, request: HttpRequest, number: str, action: str) -> HttpResponse:
        if action not in self.STATE_ACTIONS:
            raise PermissionDenied
        permission, service, done = self.STATE_ACTIONS[action]
        require_perm(request, permission)
        account = self.get_object(request, number)
        if account is None:
            messages.error(request, f"No account {number}.")
            return HttpResponseRedirect(reverse("admin:accounts_account_find"))
        form = ReasonForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                service(actor=admin_actor(request), number=str(account.number), reason=form.cleaned_data["reason"])
            except ApplicationError as error:
                service_error(request, error)
            else:
                messages.success(request, f"Account {account.number} {done}.")
            return HttpResponseRedirect(reverse("admin:accounts_account_change", args=(account.number,)))
        return backoffice_render(
            request,
            template="admin/backoffice/form.html",
            title=f"{action.capitalize()} account {account}",
            form=form,
            account=account,
            opts=self.model._meta,
        )


def account_link(number: str) -> Any:
    """An account number linking to its page (used by the transfer screens)."""
    if not number:
        return "—"
    return format_html('<a href="{}">{}</a>', reverse("admin:accounts_account_change", args=(number,)), number)
