"""Partner API: batches of transfers. ``POST /api/v1/transfer-batches/`` carries up to
``BATCH_MAX_ITEMS`` transfers, each answered with its own outcome; ``GET`` reads a batch back.

Each item is a transfer of its own (``transfers.engine.batch``): the batch's ``Idempotency-Key`` and the
item's ``client_id`` make the item's key, so a retry of the batch replays every item that was
recorded and makes what an outage left unmade; the same key with another body is 409
``idempotency_key_reused``. An item out of an account the partner may not debit is refused as
``account_not_found``, as ``POST /api/v1/transfers/`` refuses it, without stopping the others.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import AccountNumberField
from accounts.api_selectors import accounts_may_debit
from accounts.errors import AccountNotFound
from accounts.numbers import UnknownLedger
from bankcore.actors import Channel, actor_from_request
from bankcore.api.fields import ExactRegexField
from bankcore.api.parsers import LimitedJSONParser
from bankcore.api.problems import REPLAYED_HEADER
from bankcore.api.schema import links, problems, replayable
from bankcore.api.serializers import StrictInputSerializer
from bankcore.api.throttling import NotFoundRateThrottle
from bankcore.errors import ApplicationError, BusinessRuleViolation, NotFound
from transfers.api import IDEMPOTENCY_PARAMETER, TransferCreateInput, TransferOutput, _idempotency_key
from transfers.batch import (
    BATCH_MAX_ITEMS,
    BatchItem,
    BatchOutcome,
    BatchTooLarge,
    transfer_batch_submit,
)
from transfers.models import Transfer, TransferBatch
from transfers.services import transfer_refusal_error

CLIENT_ID_PATTERN = r"^[!-~]{1,64}$"
REFUSED = "refused"  # an item's status when it was refused before it was accepted (no transfer)


class BatchJSONParser(LimitedJSONParser):
    limit_setting = "API_MAX_BATCH_BODY_BYTES"


class DuplicateClientId(BusinessRuleViolation):
    """Each field valid, but two items share a client id (422, as ``same_account``: the schema
    cannot state that a field differs between the items)."""

    code = "duplicate_client_id"
    title = "Two items of the batch have the same client_id"


class BatchNotFound(NotFound):
    code = "batch_not_found"
    title = "Batch not found"


@extend_schema_field({"type": "boolean", "default": False})
class StrictBooleanField(serializers.BooleanField):
    """JSON ``true`` or ``false`` only: DRF's reads "yes", 1 and "on" as true."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class ItemAccountNumberField(AccountNumberField):
    """``AccountNumberField``, but a well-formed number of a ledger this bank does not have is one
    item's ``account_not_found`` (the engine's refusal), not the whole batch's."""

    def to_internal_value(self, data: Any) -> str:
        try:
            return super().to_internal_value(data)
        except UnknownLedger:
            return str(data)


class BatchItemInput(TransferCreateInput):
    """One transfer of a batch."""

    source_account = ItemAccountNumberField(help_text="An account linked to you.")
    destination_account = ItemAccountNumberField(help_text="Any account of the bank.")

    client_id = ExactRegexField(
        CLIENT_ID_PATTERN,
        help_text="Yours, 1 to 64 printable ASCII characters without spaces, unique in the batch: with the "
        "batch's Idempotency-Key it makes the item's own key.",
    )
    linked = StrictBooleanField(
        required=False,
        default=False,
        help_text="Linked to the next item: the chain of linked items ending with the first unlinked one "
        "happens wholly or not at all.",
    )


class BatchCreateInput(StrictInputSerializer):
    """Transfers to make together."""

    items = serializers.ListField(child=BatchItemInput(), min_length=1, max_length=BATCH_MAX_ITEMS)


class ItemErrorOutput(serializers.Serializer):
    code = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField(help_text="The HTTP status the single-transfer endpoint answers it with.")
    detail = serializers.CharField()


class BatchItemOutput(serializers.Serializer):
    position = serializers.IntegerField(help_text="The item's place in the batch, from 0.")
    client_id = serializers.CharField(allow_null=True, help_text="As sent; null when the batch is read back.")
    status = serializers.ChoiceField(
        choices=[*Transfer.Status.choices, (REFUSED, "Refused before it was accepted")],
        help_text="The transfer's status; `refused` when the item was refused before it was accepted "
        "(no transfer was recorded, and a retry checks it again).",
    )
    transfer = TransferOutput(allow_null=True)
    error = ItemErrorOutput(allow_null=True, help_text="Why the item was refused; null when it moved.")
    replayed = serializers.BooleanField(help_text="The item's recorded outcome, answered again.")


class BatchOutput(serializers.Serializer):
    id = serializers.UUIDField()
    item_count = serializers.IntegerField()
    totals = serializers.DictField(
        child=serializers.CharField(),
        help_text='The amounts asked for, summed per currency named ("" for items without one).',
    )
    created_at = serializers.DateTimeField()
    items = BatchItemOutput(many=True)


def _error_output(error: ApplicationError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {"code": error.code, "title": error.title, "status": error.http_status, "detail": str(error.detail)}


def _item_output(position: int, client_id: str | None, outcome: BatchOutcome) -> dict[str, Any]:
    transfer = outcome.transfer
    return {
        "position": position,
        "client_id": client_id,
        "status": transfer.status if transfer is not None else REFUSED,
        "transfer": TransferOutput(transfer).data if transfer is not None else None,
        "error": _error_output(outcome.error),
        "replayed": outcome.replayed,
    }


def _batch_output(batch: TransferBatch, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": str(batch.id),
        "item_count": batch.item_count,
        "totals": batch.totals,
        "created_at": serializers.DateTimeField().to_representation(batch.created_at),
        "items": items,
    }


def item_idempotency_key(batch_key: str, client_id: str) -> str:
    """An item's own key: the batch's key and the item's client id, hashed to the keys' form."""
    return "batch-item:" + hashlib.sha256(f"{batch_key}\n{client_id}".encode()).hexdigest()


_FOLLOW_UPS = {"GetTransferBatch": ("transfer_batches_retrieve", "batch_id")}
BATCH_PROBLEMS = (
    problems(
        {
            400: [
                "idempotency_key_required",
                "invalid_idempotency_key",
                "invalid_amount",
                "invalid_currency",
                "invalid_account_number",
                "invalid_reference",
                "batch_too_large",
            ],
            422: ["duplicate_client_id"],
            409: ["idempotency_key_reused"],
            413: ["payload_too_large"],
        }
    )
    | replayable(200)
    | links({201: _FOLLOW_UPS, 200: _FOLLOW_UPS})
)


class TransferBatchCreateApi(APIView):
    parser_classes = [BatchJSONParser]

    @extend_schema(
        operation_id="transfer_batches_create",
        parameters=[IDEMPOTENCY_PARAMETER],
        request=BatchCreateInput,
        responses={
            201: OpenApiResponse(BatchOutput, description="Every item's outcome, in the items' order."),
            200: OpenApiResponse(BatchOutput, description="A replay: every item's recorded outcome."),
        },
        extensions=BATCH_PROBLEMS,
        description=(
            f"Up to {BATCH_MAX_ITEMS} transfers at once, each out of an account linked to you. Each item "
            "is a transfer of its own, answered with its own outcome: one item's refusal (its `error`, "
            "with the codes of `POST /api/v1/transfers/`) does not stop the others, unless they are "
            "linked: an item with `linked: true` forms a chain with the next, and a chain happens "
            "wholly or not at all (its other items are refused `linked_transfer_failed`). The batch's "
            "Idempotency-Key with each item's `client_id` is the item's own key: retrying the batch "
            "with the same key and body answers 200 with what was recorded, and makes, once, what an "
            "outage left unmade; another body under the key is 409 `idempotency_key_reused`. Bank "
            "staff submit movements in the back office, where they may wait for approval: 403 "
            "`approval_required` here."
        ),
    )
    def post(self, request: Request) -> Response:
        key = _idempotency_key(request)
        raw = request.data.get("items") if isinstance(request.data, dict) else None
        if isinstance(raw, list) and len(raw) > BATCH_MAX_ITEMS:
            raise BatchTooLarge(f"A batch has at most {BATCH_MAX_ITEMS} items; this one has {len(raw)}.")
        data = BatchCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        rows = data.validated_data["items"]
        client_ids = [row["client_id"] for row in rows]
        if len(set(client_ids)) != len(client_ids):
            repeated = next(c for i, c in enumerate(client_ids) if c in client_ids[:i])
            raise DuplicateClientId(f"The client_id {repeated!r} is given to more than one item.")
        user = request.user
        not_found = NotFoundRateThrottle()
        if not not_found.allow_request(request, self):
            self.throttled(request, not_found.wait() or 1.0)
        permitted = accounts_may_debit(user=user, numbers={row["source_account"] for row in rows})
        items = [
            BatchItem(
                source_account=row["source_account"],
                destination_account=row["destination_account"],
                amount=row["amount"],
                currency=row.get("currency"),
                reference=row["reference"],
                idempotency_key=item_idempotency_key(key, row["client_id"]),
                linked=row["linked"],
            )
            for row in rows
        ]
        # An item out of an account the partner may not debit goes to the engine as one that
        # cannot be accepted, so that a chain it is linked in fails with it.
        refused = {
            position: AccountNotFound(f"No account {item.source_account}.")
            for position, item in enumerate(items)
            if item.source_account not in permitted
        }
        batch, outcomes = transfer_batch_submit(
            actor=actor_from_request(request, channel=Channel.API), items=items, idempotency_key=key, refused=refused
        )
        for outcome in outcomes:
            if (
                outcome.error is not None
                and outcome.error.code == AccountNotFound.code
                and outcome.transfer is not None
            ):
                not_found.record(request, self)  # a destination: any account of the bank
        body = _batch_output(
            batch, [_item_output(position, client_ids[position], outcome) for position, outcome in enumerate(outcomes)]
        )
        response = Response(body, status=200 if batch.replayed else 201)
        response["Location"] = f"/api/v1/transfer-batches/{batch.id}/"
        if batch.replayed:
            response[REPLAYED_HEADER] = "true"
        return response


class TransferBatchDetailApi(APIView):
    @extend_schema(
        operation_id="transfer_batches_retrieve",
        responses={200: BatchOutput},
        extensions=problems({404: ["batch_not_found", "not_found"]}),
        description=(
            "A batch you submitted, with its items that were accepted (each a transfer, with its "
            "current status), in the batch's order. An item refused before it was accepted left no "
            "record: its refusal is in the answer to the POST (and to its retry)."
        ),
    )
    def get(self, request: Request, batch_id: uuid.UUID) -> Response:
        client_id = actor_from_request(request, channel=Channel.API).client_id
        batch = TransferBatch.objects.filter(pk=batch_id, client_id=client_id).first()
        if batch is None:
            raise BatchNotFound(f"No batch {batch_id}.")
        # An item an outage aborted and a retry of the batch made has two transfers: the last one
        # answers for it.
        latest = {t.batch_position: t for t in batch.transfers.order_by("batch_position", "created_at")}
        items = [
            _item_output(position or 0, None, BatchOutcome(transfer, transfer_refusal_error(transfer)))
            for position, transfer in latest.items()
        ]
        return Response(_batch_output(batch, items))
