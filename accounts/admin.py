"""The tellers' account screens.

Accounts live in every ledger database, and an admin changelist is one queryset on one database:
the list shows one ledger at a time (the "ledger" filter, ``?ledger=db2``, the first by default),
while "Find account" searches by number or holder in every ledger at once. An account's page is
addressed by its number, which carries its ledger, so links never need to say which database.

Nothing here edits a row by hand: the page is read-only, and state changes only through the forms
below, each calling one service (``accounts.services``) after its review (``backoffice.review``).
The counter's money actions on an account (opening it with a deposit, cash in and out) and its
transfers call ``transfers``, which this app may not import: ``transfers.admin_counter`` adds them
to this page.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from accounts.models import Account, Entry
from accounts.selectors import accounts_by_number, accounts_search
from accounts.services import account_close, account_freeze, account_unfreeze
from backoffice.display import account_no, money, status_badge
from backoffice.forms import RequiredReasonForm
from backoffice.pages import admin_actor, backoffice_render, may, require_perm, service_error
from backoffice.review import FORM_TEMPLATE, Review, review_or_form
from bankcore.errors import ApplicationError

STATEMENT_PAGE_SIZE = 25
FIND_LIMIT = 100


# --- the changelist: one ledger at a time ----------------------------------------------------


def _ledger_choices() -> list[tuple[str, str]]:
    return [(alias, f"ledger {code}") for alias, code in settings.LEDGERS.items()]


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

    def choices(self, changelist: Any):
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
class AccountAdmin(admin.ModelAdmin):
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

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("find/", wrap(self.find_view), name="accounts_account_find"),
            path("<str:number>/state/<str:action>/", wrap(self.state_view), name="accounts_account_state"),
            *super().get_urls(),
        ]

    # --- the account page ------------------------------------------------------------------

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        account = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if account is not None:
            context["subtitle"] = f"{account.holder} — {account_no(account.number)}"
        if account is not None and self.has_view_permission(request, account):
            context.update(self.page_context(request, account))
        return super().change_view(request, object_id, form_url, context)

    def page_context(self, request: HttpRequest, account: Account) -> dict[str, Any]:
        """What the account's page shows beside its fields: the statement, and what may be done."""
        entries = Entry.objects.using(account.ledger).filter(account=account).order_by("-created_at", "-id")
        customer = account.kind == Account.Kind.CUSTOMER
        return {
            "account": account,
            "statement": Paginator(entries, STATEMENT_PAGE_SIZE).get_page(request.GET.get("page")),
            "can_freeze": customer and may(request, "accounts.freeze_account"),
            "can_close": customer and may(request, "accounts.close_account"),
        }

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
        form = RequiredReasonForm(request.POST or None)
        balance = money(account.posted, account.currency)
        title = f"{action.capitalize()} {account.holder}'s account"
        page = {
            "title": title,
            "account": account,
            "opts": self.model._meta,
            "explain": {
                "freeze": f"Freezing stops every payment into and out of {account.holder}'s account "
                f"(balance {balance}) until a supervisor unfreezes it.",
                "unfreeze": f"Unfreezing lets money move into and out of {account.holder}'s account again.",
                "close": f"Closing ends {account.holder}'s account for good. Only an empty account can be closed "
                f"(balance now {balance}).",
            }[action],
        }
        if request.method == "POST" and form.is_valid():
            reason = form.cleaned_data["reason"]
            shown = review_or_form(
                request,
                form,
                review=lambda: Review(
                    headline=title,
                    rows=[("Account", f"{account.holder} — {account_no(account.number)}"), ("Reason", reason)],
                    note="The reason is kept in the audit trail.",
                ),
                **page,
            )
            if shown is not None:
                return shown
            try:
                service(actor=admin_actor(request), number=str(account.number), reason=reason)
            except ApplicationError as error:
                service_error(request, error)
            else:
                messages.success(request, f"{account.holder}'s account {account_no(account.number)} {done}.")
            return HttpResponseRedirect(reverse("admin:accounts_account_change", args=(account.number,)))
        return backoffice_render(request, template=FORM_TEMPLATE, form=form, reviewed=True, **page)


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


from accounts import admin_partners  # noqa: E402,F401  (the partner page registers itself)
