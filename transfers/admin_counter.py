"""The counter's money on an account's page: opening an account with a cash deposit, cash paid in
and out, and the review of every money movement (``movement_review``), transfers' too.

These call ``transfers`` (the approval queue, the transfers an account made), which ``accounts``
may not import: the account screens of ``accounts.admin`` are registered again here, extended with
them, under the same addresses.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse

from accounts.admin import AccountAdmin, account_words
from accounts.models import Account
from accounts.selectors import account_get, accounts_by_number, ledger_for_new_account
from accounts.services import account_open, opening_deposit_key, opening_deposit_parse
from backoffice.display import account_no, money, status_badge
from backoffice.forms import AmountField, IdempotentForm
from backoffice.pages import (
    admin_actor,
    backoffice_render,
    may,
    refusal_on_form,
    require_perm,
    sent_again,
    service_error,
)
from backoffice.review import FORM_TEMPLATE, Review, review_or_form
from bankcore.actors import Actor
from bankcore.errors import ApplicationError
from bankcore.money import money_parse
from transfers.admin_rows import badge_of, with_badges
from transfers.approval_rules import approval_required
from transfers.approvals import money_movement_submit
from transfers.models import Approval, Transfer


def _waits_note(request: HttpRequest, amount: Any, currency: str) -> str | None:
    """What the review says when confirming makes the movement wait for a supervisor."""
    if not approval_required(user=request.user, amount=amount):
        return None
    return (
        f"Above {money(settings.APPROVAL_THRESHOLD, currency)} it waits for a supervisor's approval; "
        "the amount is held on the account from now until then."
    )


def movement_review(request: HttpRequest, *, kind: str, amount: str, source: str = "", destination: str = "") -> Review:
    """The review of a transfer (``source`` → ``destination``), a deposit (``destination``) or a
    withdrawal (``source``). Raises what reading the accounts raises (no such account, a number
    that is none, an amount that is none). What the engine would refuse is said as a warning:
    confirming sends it, and the refusal comes from the engine, as always."""
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
    note = (
        _waits_note(request, value, currency)
        or "The money moves as soon as you confirm. Check the names with the customer."
    )
    return Review(headline=headline, rows=rows, warnings=warnings, note=note)


def opening_review(request: HttpRequest, *, holder: str, currency: str, deposit: str) -> Review:
    """The review of a new account: whose, which currency, where the system keeps it (its ledger's
    code), and the cash paid in with the balance it leaves."""
    code = settings.LEDGERS.get(ledger_for_new_account(holder=holder), "?")
    rows = [("Customer", holder), ("Currency", currency), ("Ledger", f"{code} (the system's choice)")]
    check = "Check the name with the customer's papers."
    value, waits = Decimal("0.00"), None
    if deposit:
        value = opening_deposit_parse(deposit)
        rows.append(("Cash paid in now", money(value, currency)))
        waits = _waits_note(request, value, currency)
    # A deposit that waits for a supervisor is not on the account yet.
    rows.append(("Balance after", money(0 if waits else value, currency)))
    if waits:
        note = f"The account is opened as soon as you confirm. {waits} {check}"
    elif deposit:
        note = f"The account is opened and the cash booked as soon as you confirm. {check}"
    else:
        note = f"The account is opened as soon as you confirm. {check}"
    return Review(headline=f"Open an account for {holder}", rows=rows, note=note)


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


class CounterAccountAdmin(AccountAdmin):
    """The account screens with the counter's money: open with a deposit, cash in and out, and the
    transfers and waiting requests on the account's page."""

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<str:number>/deposit/", wrap(self.cash_view), {"kind": "deposit"}, name="accounts_account_deposit"),
            path(
                "<str:number>/withdraw/", wrap(self.cash_view), {"kind": "withdrawal"}, name="accounts_account_withdraw"
            ),
            *super().get_urls(),
        ]

    def page_context(self, request: HttpRequest, account: Account) -> dict[str, Any]:
        number = str(account.number)
        either = Q(source_account=number) | Q(destination_account=number)
        rows: list[Any] = list(with_badges(Transfer.objects.filter(either)).order_by("-created_at")[:50])
        others = accounts_by_number(numbers=[n for t in rows for n in (t.source_account, t.destination_account)])
        for row in rows:
            # Seen from this account: out is negative, and the other side by name.
            out = row.source_account == number
            other = row.destination_account if out else row.source_account
            row.signed_amount = -row.amount if out else row.amount
            row.counterparty = account_words(other, others.get(other))
            row.counterparty_number = other
            row.badge = status_badge(*badge_of(row))
        customer = account.kind == Account.Kind.CUSTOMER
        return {
            **super().page_context(request, account),
            "transfers": rows,
            "waiting_approvals": Approval.objects.filter(either, status=Approval.Status.PENDING).order_by(
                "-created_at"
            ),
            "can_cash": customer and may(request, "accounts.handle_cash"),
            "can_transfer": customer and may(request, "transfers.add_transfer"),
        }

    # --- open an account -------------------------------------------------------------------

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None):
        require_perm(request, "accounts.add_account")
        form = OpenAccountForm(request.POST or None, initial={"holder": request.GET.get("holder", "")[:200]})
        page = {"title": "Open an account", "opts": self.model._meta}
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            shown = review_or_form(
                request,
                form,
                review=lambda: opening_review(
                    request, holder=data["holder"], currency=data["currency"], deposit=data["opening_deposit"]
                ),
                **page,
            )
            if shown is not None:
                return shown
            actor, key = admin_actor(request), form.key()
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
                    deposit_key = opening_deposit_key(key) if key is not None else None
                    self._cash_submit(
                        request,
                        actor,
                        "deposit",
                        str(account.number),
                        data["opening_deposit"],
                        "Opening deposit",
                        deposit_key,
                    )
                return HttpResponseRedirect(reverse("admin:accounts_account_change", args=(account.number,)))
        return backoffice_render(request, template=FORM_TEMPLATE, form=form, reviewed=True, **page)

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
        page = {"title": title, "account": account, "opts": self.model._meta}
        if valid:
            number = str(account.number)
            side = {"source": number} if kind == "withdrawal" else {"destination": number}
            shown = review_or_form(
                request,
                form,
                review=lambda: movement_review(request, kind=kind, amount=form.cleaned_data["amount"], **side),
                **page,
            )
            if shown is not None:
                return shown
            data = form.cleaned_data
            if self._cash_submit(
                request, admin_actor(request), kind, number, data["amount"], data["reference"], form.key(), form
            ):
                return HttpResponseRedirect(reverse("admin:accounts_account_change", args=(account.number,)))
        status = 200 if request.method == "GET" or valid else 400
        return backoffice_render(request, template=FORM_TEMPLATE, form=form, reviewed=True, status=status, **page)


admin.site.unregister(Account)
admin.site.register(Account, CounterAccountAdmin)
