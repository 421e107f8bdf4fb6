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
from dataclasses import dataclass
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
from accounts.selectors import accounts_by_number, accounts_search, ledger_for_new_account
from accounts.services import (
    account_close,
    account_freeze,
    account_open,
    account_unfreeze,
    opening_deposit_key,
    opening_deposit_parse,
)
from audit.roles import SUPERUSER_WITHOUT_ROLE, role_permits
from audit.services import audit_refusal_record
from bankcore.actors import Actor, Channel, actor_from_request
from bankcore.display import account_no, in_words, money, status_badge
from bankcore.errors import ApplicationError

admin.site.site_header = "bankcore back office"
admin.site.site_title = "bankcore back office"
admin.site.index_title = "Back office"
# No public site behind the back office: "View site" would lead nowhere.
admin.site.site_url = None  # type: ignore[assignment]
# The front page lists every screen; the side bar would take the width the money columns need.
admin.site.enable_nav_sidebar = False

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
    superuser outside the roles is told why. The refusal is an audit event (``backoffice.refused``:
    who, which page, which permissions were missing)."""
    missing = [perm for perm in perms if not may(request, perm)]
    if not missing:
        return
    code = "superuser_without_role" if request.user.is_superuser else "permission_denied"
    match = request.resolver_match
    audit_refusal_record(
        actor=admin_actor(request),
        action="backoffice",
        object_type="page",
        object_id=(match.view_name if match else request.path)[:64],
        code=code,
        changes={"method": request.method, "path": request.path[:200], "missing": missing},
    )
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
    messages.error(request, f"{in_words(error.detail)} ({error.code})")


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


# --- the review before a movement -----------------------------------------------------------


def wants_review(request: HttpRequest) -> bool:
    """The form's own button asks for the review page first; its "Confirm" sends the form on."""
    return "review" in request.POST or "edit" in request.POST


@dataclass
class Review:
    """What will happen, to whom, and what it leaves: the page a teller confirms."""

    headline: str
    rows: list[tuple[str, str]]
    warnings: list[str]
    note: str


def movement_review(request: HttpRequest, *, kind: str, amount: str, source: str = "", destination: str = "") -> Review:
    """The review of a transfer (``source`` → ``destination``), a deposit (``destination``) or a
    withdrawal (``source``). Raises what reading the accounts raises (no such account, a number
    that is none, an amount that is none). What the engine would refuse is said as a warning:
    confirming sends it, and the refusal comes from the engine, as always."""
    from accounts.selectors import account_get
    from bankcore.money import money_parse
    from transfers.approvals import approval_required

    value = money_parse(amount)
    src = account_get(number=source) if source else None
    dst = account_get(number=destination) if destination else None
    either = src or dst
    currency = either.currency if either is not None else settings.DEFAULT_CURRENCY
    shown = money(value, currency)
    rows: list[tuple[str, str]] = []
    warnings: list[str] = []
    for label, account in (("From", src), ("To", dst)):
        if account is not None:
            rows.append((label, f"{account_words(str(account.number), account)} — {account_no(account.number)}"))
            if account.status != Account.Status.ACTIVE:
                warnings.append(f"{account.holder}'s account is {account.get_status_display().lower()}.")
    rows.append(("Amount", shown))
    if src is not None and src.kind == Account.Kind.CUSTOMER:
        rows.append((f"{src.holder}: available after", money(src.available - value, currency)))
        if not src.allow_overdraft and src.available < value:
            warnings.append(f"{src.holder} has only {money(src.available, currency)} available.")
    if dst is not None and dst.kind == Account.Kind.CUSTOMER:
        rows.append((f"{dst.holder}: balance after", money(dst.posted + value, currency)))
    if kind == "deposit":
        headline = f"Take {shown} in cash and pay it into {dst.holder if dst else '?'}'s account"
    elif kind == "withdrawal":
        headline = f"Pay out {shown} in cash from {src.holder if src else '?'}'s account"
    else:
        headline = f"Move {shown} from {src.holder if src else '?'} to {dst.holder if dst else '?'}"
    if approval_required(user=request.user, amount=value):
        note = (
            f"Above {money(settings.APPROVAL_THRESHOLD, currency)} it waits for a supervisor's approval; "
            "the amount is held on the account from now until then."
        )
    else:
        note = "The money moves as soon as you confirm. Check the names with the customer."
    return Review(headline=headline, rows=rows, warnings=warnings, note=note)


def review_or_form(
    request: HttpRequest, form: forms.Form, *, kind: str, source: str = "", destination: str = "", **page: Any
) -> HttpResponse | None:
    """For a valid form sent by its own button: the review page (or, with "Change", the form
    again); None when the form was confirmed and is to be carried out."""
    if not wants_review(request):
        return None
    review = None
    if "edit" not in request.POST:
        try:
            review = movement_review(
                request, kind=kind, amount=form.cleaned_data["amount"], source=source, destination=destination
            )
        except ApplicationError as error:
            refusal_on_form(form, error)
    return backoffice_render(
        request, template="admin/backoffice/form.html", form=form, review=review, reviewed=True, **page
    )


# --- forms -----------------------------------------------------------------------------------


def _ledger_choices() -> list[tuple[str, str]]:
    return [(alias, f"ledger {code}") for alias, code in settings.LEDGERS.items()]


class OpenAccountForm(IdempotentForm):
    """A new account for a customer: who, in which currency, and what they pay in. The ledger it
    lives in is the system's choice (``ledger_for_new_account``)."""

    holder = forms.CharField(
        max_length=200, label="Customer's full name", widget=forms.TextInput(attrs={"autofocus": True})
    )
    currency = forms.CharField(max_length=3, initial=lambda: settings.DEFAULT_CURRENCY)
    opening_deposit = AmountField(
        required=False,
        label="Cash paid in now",
        help_text="Optional, e.g. 500.00 (above the approval threshold it waits for a supervisor).",
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
    amount = AmountField(help_text='For example "1,250.50".', widget=forms.TextInput(attrs={"autofocus": True}))
    reference = forms.CharField(max_length=140, required=False)


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Reason"})
    )


class StateReasonForm(forms.Form):
    """Freeze, unfreeze, close: the reason is written into the audit trail, and required."""

    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Why (kept in the audit trail)", "autofocus": True}),
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
    list_display = ("number_display", "holder", "status_display", "posted_display", "available_display")
    list_filter = (LedgerFilter, "status", "currency", "kind")
    ordering = ("pk",)
    actions = None
    list_per_page = 50
    show_full_result_count = False
    # The balances are the page's panel (change_form.html), once.
    fields = ("number_display", "holder", "kind", "currency", "allow_overdraft", "ledger_display", "created_at")
    readonly_fields = fields
    change_list_template = "admin/accounts/account/change_list.html"
    change_form_template = "admin/accounts/account/change_form.html"

    @admin.display(description="ledger code")
    def ledger_display(self, obj: Account) -> str:
        return str(settings.LEDGERS.get(obj.ledger, "?"))

    @admin.display(description="account number", ordering="pk")
    def number_display(self, obj: Account) -> str:
        return account_no(obj.number)

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: Account) -> Any:
        tone = {"active": "ok", "frozen": "bad"}.get(obj.status, "neutral")
        return status_badge(obj.get_status_display(), tone)

    @admin.display(description="balance", ordering="posted")
    def posted_display(self, obj: Account) -> str:
        return money(obj.posted, obj.currency)

    @admin.display(description="available")
    def available_display(self, obj: Account) -> str:
        return money(obj.available, obj.currency)

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
        if account is not None:
            context["subtitle"] = f"{account.holder} — {account_no(account.number)}"
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
            rows: list[Any] = list(transfers)
            others = accounts_by_number(numbers=[n for t in rows for n in (t.source_account, t.destination_account)])
            for row in rows:
                # Seen from this account: out is negative, and the other side by name.
                out = row.source_account == number
                other = row.destination_account if out else row.source_account
                row.signed_amount = -row.amount if out else row.amount
                row.counterparty = account_words(other, others.get(other))
                row.counterparty_number = other
            context.update(
                account=account,
                statement=page,
                transfers=rows,
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
        form = OpenAccountForm(request.POST or None, initial={"holder": request.GET.get("holder", "")[:200]})
        if request.method == "POST" and form.is_valid():
            actor = admin_actor(request)
            data = form.cleaned_data
            key = form.key()
            try:
                account = account_open(
                    actor=actor,
                    ledger=ledger_for_new_account(holder=data["holder"]),
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
            request,
            template="admin/backoffice/form.html",
            title="Open an account",
            form=form,
            opts=self.model._meta,
            submit_label="Open the account",
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
                f"{label} of {outcome.amount} {outcome.currency} waits for a supervisor's approval "
                f"(request #{outcome.pk}): {outcome.why}.",
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
        title = ("Cash deposit to " if kind == "deposit" else "Cash withdrawal from ") + account.holder
        if valid:
            number = str(account.number)
            shown = review_or_form(
                request,
                form,
                kind=kind,
                source=number if kind == "withdrawal" else "",
                destination=number if kind == "deposit" else "",
                title=title,
                account=account,
                opts=self.model._meta,
            )
            if shown is not None:
                return shown
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
        return backoffice_render(
            request,
            template="admin/backoffice/form.html",
            title=title,
            form=form,
            account=account,
            opts=self.model._meta,
            reviewed=True,
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
        form = StateReasonForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                service(actor=admin_actor(request), number=str(account.number), reason=form.cleaned_data["reason"])
            except ApplicationError as error:
                service_error(request, error)
            else:
                messages.success(request, f"{account.holder}'s account {account_no(account.number)} {done}.")
            return HttpResponseRedirect(reverse("admin:accounts_account_change", args=(account.number,)))
        balance = money(account.posted, account.currency)
        explain = {
            "freeze": f"Freezing stops every payment into and out of {account.holder}'s account "
            f"(balance {balance}) until a supervisor unfreezes it.",
            "unfreeze": f"Unfreezing lets money move into and out of {account.holder}'s account again.",
            "close": f"Closing ends {account.holder}'s account for good. Only an empty account can be closed "
            f"(balance now {balance}).",
        }[action]
        return backoffice_render(
            request,
            template="admin/backoffice/form.html",
            title=f"{action.capitalize()} {account.holder}'s account",
            form=form,
            account=account,
            opts=self.model._meta,
            explain=explain,
            submit_label=f"{action.capitalize()} the account",
        )


def account_link(number: str, account: Account | None = None) -> Any:
    """An account as people recognise it: its holder, linking to its page, above its number in
    groups (used by the transfer screens). ``account``: the row already read, else it is looked up."""
    if not number:
        return "—"
    if account is None:
        account = accounts_by_number(numbers=[number]).get(number)
    url = reverse("admin:accounts_account_change", args=(number,))
    holder = account_words(number, account)
    return format_html(
        '<a href="{}" class="bo-account">{}</a><br><span class="bo-number">{}</span>', url, holder, account_no(number)
    )


def account_words(number: str, account: Account | None) -> str:
    """Who an account is, in words: its holder, or the counter's cash for a ledger's cash account."""
    if account is None:
        return "unknown account"
    if account.kind != Account.Kind.CUSTOMER:
        return f"Cash at the counter ({account.currency})"
    return account.holder


def person(user: Any) -> str:
    """A member of staff by name (their username when no name is recorded)."""
    if user is None:
        return "—"
    return user.get_full_name() or user.get_username()


from accounts import admin_partners  # noqa: E402,F401  (the partner page registers itself)
