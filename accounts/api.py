"""Partner API: accounts and their statements (read-only). Thin views over the selectors.

A partner sees only the accounts linked to it; any other number answers 404 exactly like a number
that does not exist. Staff with ``accounts.view_account`` see every account.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api_selectors import account_entries, account_get_visible, account_scope, accounts_page
from accounts.models import Account, Entry
from accounts.numbers import NUMBER_LENGTH, InvalidAccountNumber, account_number_parse
from bankcore.api.fields import BoundedDateTimeField, ExactRegexField, StrictCharField, StrictIntegerField
from bankcore.api.pagination import DateTimeCursorPagination
from bankcore.api.schema import problems
from bankcore.api.serializers import StrictInputSerializer

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 200


# An account number as the API takes it: 14 ASCII digits, no spaces (those a person may type are
# for the back office). Its last two digits are check digits (ISO 7064 MOD 97-10), which no JSON
# Schema keyword can state: the custom format says it, and a number whose check digits do not match
# is refused with 400 ``invalid_account_number`` before any query — a typo is told apart from an
# account that does not exist (404 ``account_not_found``).
ACCOUNT_NUMBER_FORMAT = "account-number"
NUMBER_PATTERN = f"^[0-9]{{{NUMBER_LENGTH}}}$"
ACCOUNT_NUMBER_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": ACCOUNT_NUMBER_FORMAT,
    "pattern": NUMBER_PATTERN,
    "minLength": NUMBER_LENGTH,
    "maxLength": NUMBER_LENGTH,
    "example": "01000000000145",
    "description": (
        "14 digits: ledger code (2), serial (10), check digits (2, ISO 7064 MOD 97-10 as in IBAN). "
        "Check digits that do not match: 400 `invalid_account_number`."
    ),
}
ACCOUNT_NUMBER_PATH_PARAMETER = OpenApiParameter(
    "number", ACCOUNT_NUMBER_SCHEMA, location=OpenApiParameter.PATH, description=ACCOUNT_NUMBER_SCHEMA["description"]
)
_NUMBER_FORM = re.compile(f"[0-9]{{{NUMBER_LENGTH}}}")


def account_number_strict(text: str) -> str:
    """``text`` if it is an account number in the API's form (``ACCOUNT_NUMBER_SCHEMA``), else
    ``InvalidAccountNumber``; the ledger and check digits are ``account_number_parse``'s to check."""
    if not _NUMBER_FORM.fullmatch(text):
        raise InvalidAccountNumber(f"An account number has exactly {NUMBER_LENGTH} digits.")
    return text


@extend_schema_field(ACCOUNT_NUMBER_SCHEMA)
class AccountNumberField(StrictCharField):
    """A well-formed account number (14 digits, check digits right, a ledger of this bank)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        text = super().to_internal_value(data)
        try:
            account_number_strict(text)
            return account_number_parse(text).number
        except InvalidAccountNumber as refused:
            # A well-formed number of a ledger this bank does not have (UnknownLedger) is not
            # caught: it answers 404 account_not_found, like any number that does not exist.
            raise serializers.ValidationError(refused.detail, code=refused.code) from None


def _money() -> serializers.DecimalField:
    return serializers.DecimalField(max_digits=20, decimal_places=2, coerce_to_string=True, read_only=True)


class AccountOutput(serializers.Serializer):
    number = serializers.CharField()
    ledger = serializers.SerializerMethodField()
    holder = serializers.CharField()
    kind = serializers.ChoiceField(choices=Account.Kind.choices)
    currency = serializers.CharField()
    status = serializers.ChoiceField(choices=Account.Status.choices)
    posted = _money()
    pending_debits = _money()
    pending_credits = _money()
    available = _money()
    created_at = serializers.DateTimeField()

    def get_ledger(self, account: Account) -> str:
        """The ledger's two-digit code, the first two digits of the number."""
        return str(settings.LEDGERS[account.ledger])


class EntryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    amount = serializers.DecimalField(
        max_digits=20, decimal_places=2, coerce_to_string=True, help_text="Signed: credits positive."
    )
    balance_after = _money()
    kind = serializers.ChoiceField(choices=Entry.Kind.choices)
    transfer_id = serializers.UUIDField()
    description = serializers.CharField()
    created_at = serializers.DateTimeField()


class AccountFilter(StrictInputSerializer):
    ledger = ExactRegexField(r"^[0-9]{2}$", required=False, help_text="A ledger's two-digit code.")
    status = serializers.ChoiceField(choices=Account.Status.choices, required=False)
    currency = ExactRegexField(r"^[A-Z]{3}$", required=False, help_text="ISO 4217.")
    # Keyset positions, not references: any 14 digits order among the numbers (no check digits, no
    # ledger needed); the page links carry the last and first numbers of a page.
    after = ExactRegexField(NUMBER_PATTERN, required=False, help_text="The page after this account number.")
    before = ExactRegexField(NUMBER_PATTERN, required=False, help_text="The page before this account number.")
    limit = StrictIntegerField(required=False, min_value=1, max_value=PAGE_SIZE_MAX, default=PAGE_SIZE_DEFAULT)


class EntryFilter(StrictInputSerializer):
    created_from = BoundedDateTimeField(clamp=True, required=False, help_text="Inclusive.")
    created_to = BoundedDateTimeField(clamp=True, required=False, help_text="Exclusive.")
    cursor = serializers.CharField(required=False, max_length=500, trim_whitespace=False)
    limit = StrictIntegerField(required=False, min_value=1, max_value=PAGE_SIZE_MAX)


def _page_link(request: Request, **params: str) -> str:
    query = request.query_params.copy()
    for name in ("after", "before"):
        query.pop(name, None)
    for name, value in params.items():
        query[name] = value
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def account_page_schema(name: str, item: type[serializers.Serializer]) -> Any:
    return inline_serializer(
        name=name,
        fields={
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": item(many=True),
        },
    )


class AccountListApi(APIView):
    @extend_schema(
        operation_id="accounts_list",
        parameters=[AccountFilter],
        responses={200: account_page_schema("AccountPage", AccountOutput)},
        description="The accounts you may see, ordered by number; keyset pages (`after`, `before`).",
    )
    def get(self, request: Request) -> Response:
        filters = AccountFilter(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        accounts, has_more = accounts_page(
            scope=account_scope(user=request.user),
            ledger=params.get("ledger"),
            status=params.get("status"),
            currency=params.get("currency"),
            after=params.get("after"),
            before=params.get("before"),
            limit=params["limit"],
        )
        backward = params.get("before") is not None
        next_link = previous_link = None
        if accounts:
            if has_more or backward:
                next_link = _page_link(request, after=str(accounts[-1].number))
            if (has_more and backward) or (not backward and params.get("after")):
                previous_link = _page_link(request, before=str(accounts[0].number))
        body = {"next": next_link, "previous": previous_link, "results": AccountOutput(accounts, many=True).data}
        return Response(body)


class AccountDetailApi(APIView):
    @extend_schema(
        operation_id="accounts_retrieve",
        parameters=[ACCOUNT_NUMBER_PATH_PARAMETER],
        responses={200: AccountOutput},
        extensions=problems({400: ["invalid_account_number"], 404: ["account_not_found"]}),
        description="Holder, currency, status and balances: posted, pending debits and credits, available.",
    )
    def get(self, request: Request, number: str) -> Response:
        account = account_get_visible(user=request.user, number=account_number_strict(number))
        return Response(AccountOutput(account).data)


class EntryPagination(DateTimeCursorPagination):
    ordering = ("-created_at", "-id")
    page_size = PAGE_SIZE_DEFAULT
    page_size_query_param = "limit"
    max_page_size = PAGE_SIZE_MAX


class AccountEntriesApi(APIView):
    @extend_schema(
        operation_id="accounts_entries_list",
        parameters=[ACCOUNT_NUMBER_PATH_PARAMETER, EntryFilter],
        responses={200: account_page_schema("EntryPage", EntryOutput)},
        extensions=problems({400: ["invalid_account_number"], 404: ["account_not_found", "not_found"]}),
        description="The statement, newest first; `created_from` inclusive, `created_to` exclusive.",
    )
    def get(self, request: Request, number: str) -> Response:
        filters = EntryFilter(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        account = account_get_visible(user=request.user, number=account_number_strict(number))
        entries = account_entries(
            account=account, created_from=params.get("created_from"), created_to=params.get("created_to")
        )
        paginator = EntryPagination()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(EntryOutput(page, many=True).data)
