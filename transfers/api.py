"""Partner API: transfers. Thin views over ``transfers.approvals.money_movement_execute`` (the
four-eyes rule, then ``transfer_create``), ``transfer_reverse`` and the selectors; every refusal
is an ``ApplicationError`` rendered by ``bankcore.api.problems``.

Idempotency: ``POST`` needs an ``Idempotency-Key`` header. The engine stores it with the client's
identity (``Actor.client_id``, the partner's user) and a hash of the request, so a retry answers
with the first outcome (marked ``Idempotent-Replayed: true``) and a reuse with another body is 409
``idempotency_key_reused``. Only what the engine recorded is replayed: a refusal found before the
transfer is accepted (invalid input, ``same_account``, ``amount_above_maximum``, an account the
client may not debit, ``approval_required``) depends only on the request, the client's links and
the configuration, and is answered again, the same while those stay the same. An outage is not
recorded as an outcome (``transfers.errors.NOT_AN_OUTCOME``): a retry of a transfer a server's
failure aborted is carried out (docs/api.md, "Retries, outages and idempotency").
"""

from __future__ import annotations

import uuid
from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, AccountNumberField, account_page_schema
from accounts.api_selectors import account_may_debit
from accounts.errors import AccountNotFound
from bankcore.actors import Channel, actor_from_request
from bankcore.api.fields import AmountField, BoundedDateTimeField, CurrencyField, StrictCharField, StrictIntegerField
from bankcore.api.pagination import DateTimeCursorPagination
from bankcore.api.problems import REPLAYED_HEADER, IdempotencyKeyRequired
from bankcore.api.schema import links, problems, replayable
from bankcore.api.serializers import StrictInputSerializer
from bankcore.api.throttling import NotFoundRateThrottle
from bankcore.fastpaths import SharedFields
from bankcore.idempotency import IDEMPOTENCY_KEY_MAX_LENGTH
from transfers.api_selectors import transfer_get_visible, transfer_reversal_check, transfer_wait_final, transfers_list
from transfers.approvals import money_movement_execute
from transfers.models import Approval, Transfer
from transfers.services import REFERENCE_MAX_LENGTH, transfer_refusal_error, transfer_reverse

IDEMPOTENCY_HEADER = "Idempotency-Key"


class TransferOutput(SharedFields):
    """A transfer as the API shows it; its fields are built once (``bankcore.fastpaths.SharedFields``)."""

    id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=Transfer.Kind.choices)
    status = serializers.ChoiceField(choices=Transfer.Status.choices)
    source_account = serializers.CharField()
    destination_account = serializers.CharField()
    amount = serializers.DecimalField(max_digits=20, decimal_places=2, coerce_to_string=True)
    currency = serializers.CharField()
    reference = serializers.CharField()
    failure_code = serializers.CharField(help_text="Empty unless the transfer was refused (status aborted).")
    reversal_of = serializers.UUIDField(source="reversal_of_id", allow_null=True)
    created_at = serializers.DateTimeField()
    committed_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


# Printable text and spaces of any width (``transfers.services.text_is_visible``): no JSON Schema
# keyword can say "Unicode categories L, M, N, P, S, Zs", so a custom format names the rule and the
# description spells it out; anything else is 400 ``invalid_reference``.
VISIBLE_TEXT_FORMAT = "visible-text"


@extend_schema_field(
    {
        "type": "string",
        "format": VISIBLE_TEXT_FORMAT,
        "maxLength": REFERENCE_MAX_LENGTH,
        "description": (
            f"Up to {REFERENCE_MAX_LENGTH} characters, kept as sent: letters, marks, numbers, punctuation, "
            "symbols and spaces (Unicode L, M, N, P, S, Zs); a control, format (bidi, zero-width), private "
            "or unassigned character is 400 `invalid_reference`."
        ),
    }
)
class ReferenceField(StrictCharField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            required=False, allow_blank=True, trim_whitespace=False, max_length=REFERENCE_MAX_LENGTH, default=""
        )


class TransferCreateInput(StrictInputSerializer):
    """A transfer to make."""

    source_account = AccountNumberField(help_text="An account linked to you.")
    destination_account = AccountNumberField(help_text="Any account of the bank.")
    amount = AmountField(help_text='A positive decimal string with at most two places, e.g. "125.50".')
    currency = CurrencyField(required=False, help_text="ISO 4217; defaults to the source account's.")
    reference = ReferenceField()


class TransferReverseInput(StrictInputSerializer):
    """A reversal: the original transfer's amount moved back."""

    reference = ReferenceField()


class TransferFilter(StrictInputSerializer):
    account = AccountNumberField(required=False, help_text="Either side of the transfer.")
    status = serializers.ChoiceField(choices=Transfer.Status.choices, required=False)
    created_from = BoundedDateTimeField(clamp=True, required=False, help_text="Inclusive.")
    created_to = BoundedDateTimeField(clamp=True, required=False, help_text="Exclusive.")
    cursor = serializers.CharField(required=False, max_length=500, trim_whitespace=False)
    limit = StrictIntegerField(required=False, min_value=1, max_value=PAGE_SIZE_MAX)


# ``bankcore.idempotency.idempotency_key_clean``'s rule, as HTTP carries it: 1 to 255 printable ASCII
# characters, neither first nor last a space (HTTP drops spaces around a header's value, and an
# empty key is 400 ``idempotency_key_required``).
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    {
        "type": "string",
        "minLength": 1,
        "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
        "pattern": "^[!-~]([ -~]*[!-~])?$",
        "example": "order-8812-payout",
    },
    location=OpenApiParameter.HEADER,
    required=True,
    description=(
        f"1 to {IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters, no space first or last; one key per "
        "request you mean to make once. A retry with the same key and body answers the first outcome."
    ),
)
# What a client does next with the transfer it made: read it, reverse it.
_FOLLOW_UPS = {
    "GetTransfer": ("transfers_retrieve", "transfer_id"),
    "ReverseTransfer": ("transfers_reverse", "transfer_id"),
}
# Codes a transfer can be refused with. The 404, 422 and 503 ones found once the transfer was accepted
# are recorded on the aborted transfer, so a replay answers the same, marked Idempotent-Replayed.
CREATE_PROBLEMS = (
    problems(
        {
            400: [
                "idempotency_key_required",
                "invalid_idempotency_key",
                "invalid_amount",
                "invalid_currency",
                "invalid_account_number",
                "invalid_reference",
            ],
            403: ["approval_required", "role_required"],
            404: ["account_not_found"],
            409: ["idempotency_key_reused"],
            422: [
                "same_account",
                "insufficient_funds",
                "daily_limit_exceeded",
                "amount_above_maximum",
                "currency_mismatch",
                "account_frozen",
                "account_closed",
                "internal_account",
                "transfer_timed_out",
            ],
        }
    )
    | replayable(201, 202, 404, 422, 503)
    | links({201: _FOLLOW_UPS, 202: _FOLLOW_UPS})
)
REVERSE_PROBLEMS = (
    problems(
        {
            400: ["idempotency_key_required", "invalid_idempotency_key", "invalid_reference"],
            403: ["reversal_not_allowed", "role_required"],
            404: ["transfer_not_found", "not_found"],
            409: ["idempotency_key_reused", "transfer_already_reversed"],
            422: [
                "transfer_not_reversible",
                "insufficient_funds",
                "account_frozen",
                "account_closed",
                "transfer_timed_out",
            ],
        }
    )
    | replayable(201, 202, 422, 503)
    | links({201: _FOLLOW_UPS, 202: _FOLLOW_UPS})
)


def _idempotency_key(request: Request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None or key == "":
        raise IdempotencyKeyRequired(f"Send an {IDEMPOTENCY_HEADER} header with every POST that moves money.")
    return key


def _transfer_response(transfer: Transfer) -> Response:
    """201 for a finished transfer, 202 when a ledger failed mid-way and recovery will finish it.
    A replay that overtook its original waits for its outcome, refusal included."""
    if transfer.replayed and not transfer.is_final:
        transfer = transfer_wait_final(transfer=transfer)
        error = transfer_refusal_error(transfer)
        if error is not None:
            error.replayed = True
            raise error
    status = 201 if transfer.is_final else 202
    response = Response(TransferOutput(transfer).data, status=status)
    response["Location"] = f"/api/v1/transfers/{transfer.id}/"
    if transfer.replayed:
        response[REPLAYED_HEADER] = "true"
    return response


_CREATED_RESPONSES = {
    201: OpenApiResponse(TransferOutput, description="Done (or replayed)."),
    202: OpenApiResponse(TransferOutput, description="Accepted; a ledger failed mid-way and recovery finishes it."),
}


class TransferListCreateApi(APIView):
    @extend_schema(
        operation_id="transfers_list",
        parameters=[TransferFilter],
        responses={200: account_page_schema("TransferPage", TransferOutput)},
        extensions=problems({400: ["invalid_account_number"], 404: ["not_found", "account_not_found"]}),
        description="The transfers you made or that touch your accounts, newest first.",
    )
    def get(self, request: Request) -> Response:
        filters = TransferFilter(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        transfers = transfers_list(
            user=request.user,
            account=params.get("account"),
            status=params.get("status"),
            created_from=params.get("created_from"),
            created_to=params.get("created_to"),
        )
        paginator = TransferPagination()
        page = paginator.paginate_queryset(transfers, request, view=self)
        return paginator.get_paginated_response(TransferOutput(page, many=True).data)

    @extend_schema(
        operation_id="transfers_create",
        parameters=[IDEMPOTENCY_PARAMETER],
        request=TransferCreateInput,
        responses=_CREATED_RESPONSES,
        extensions=CREATE_PROBLEMS,
        description=(
            "Move money out of an account linked to you into any account. A refusal found once the "
            "transfer is accepted (funds, limit, account state) is recorded: retrying with the same "
            "key replays the same problem, marked `Idempotent-Replayed`. An outage is not an outcome: "
            "a transfer that failed with 503 (`ledger_unavailable`, `ledger_busy`) or 422 "
            "`transfer_timed_out` moved nothing, and retrying it with the same key makes it, once. A "
            "refusal of the request itself (invalid input, `same_account`, `amount_above_maximum`, "
            "an account you may not debit, `approval_required`) is not stored: a retry is checked "
            "again and answers the same while your links and the configuration stay the same. A "
            "destination that does not exist is 404 `account_not_found`; after `API_THROTTLE_NOT_FOUND_RATE` "
            "of those, every transfer you post is 429 `throttled` until the allowance refills."
        ),
    )
    def post(self, request: Request) -> Response:
        key = _idempotency_key(request)
        data = TransferCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        params = data.validated_data
        not_found = NotFoundRateThrottle()
        if not not_found.allow_request(request, self):
            self.throttled(request, not_found.wait() or 1.0)
        if not account_may_debit(user=request.user, number=params["source_account"]):
            raise AccountNotFound(f"No account {params['source_account']}.")
        try:
            transfer = money_movement_execute(
                actor=actor_from_request(request, channel=Channel.API),
                user=request.user,
                kind=Approval.Kind.TRANSFER,
                source_account=params["source_account"],
                destination_account=params["destination_account"],
                amount=params["amount"],
                currency=params.get("currency"),
                reference=params["reference"],
                idempotency_key=key,
            )
        except AccountNotFound:
            not_found.record(request, self)  # the destination: any account of the bank
            raise
        return _transfer_response(transfer)


class TransferPagination(DateTimeCursorPagination):
    ordering = ("-created_at", "-id")
    page_size = PAGE_SIZE_DEFAULT
    page_size_query_param = "limit"
    max_page_size = PAGE_SIZE_MAX


class TransferDetailApi(APIView):
    @extend_schema(
        operation_id="transfers_retrieve",
        responses={200: TransferOutput},
        extensions=problems({404: ["transfer_not_found", "not_found"]}),
    )
    def get(self, request: Request, transfer_id: uuid.UUID) -> Response:
        transfer = transfer_get_visible(user=request.user, transfer_id=transfer_id)
        return Response(TransferOutput(transfer).data)


class TransferReverseApi(APIView):
    @extend_schema(
        operation_id="transfers_reverse",
        parameters=[IDEMPOTENCY_PARAMETER],
        request=TransferReverseInput,
        responses=_CREATED_RESPONSES,
        extensions=REVERSE_PROBLEMS,
        description=(
            "Move a completed transfer's amount back, as a new transfer. A partner may reverse when "
            "it may debit the original destination; bank staff need `transfers.reverse_transfer` "
            "(a supervisor). At most one reversal per transfer."
        ),
    )
    def post(self, request: Request, transfer_id: uuid.UUID) -> Response:
        key = _idempotency_key(request)
        # No body reads as {} (the reference is optional); a JSON body that is not an object, even a
        # falsy one ([], null, false, 0, ""), is refused as for POST transfers/.
        data = TransferReverseInput(data=request.data)
        data.is_valid(raise_exception=True)
        original = transfer_get_visible(user=request.user, transfer_id=transfer_id)
        transfer_reversal_check(user=request.user, transfer=original)
        transfer = transfer_reverse(
            actor=actor_from_request(request, channel=Channel.API),
            transfer_id=original.pk,
            reference=data.validated_data["reference"],
            idempotency_key=key,
        )
        return _transfer_response(transfer)
