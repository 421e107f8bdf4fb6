"""OpenAPI: every problem response documented, by a drf-spectacular postprocessing hook
(``SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]``) and the ``extend_schema`` extensions a view
gives it (``problems``, ``links``, ``replayable``)."""

from __future__ import annotations

from typing import Any

from bankcore.api.problems import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_PREFIX, REPLAYED_HEADER

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details, with a stable machine `code`.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "example": f"{PROBLEM_TYPE_PREFIX}insufficient_funds"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "example": "insufficient_funds"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
        "transfer_id": {"type": "string", "format": "uuid", "description": "The transfer a refusal was recorded on."},
        "retry_after": {"type": "integer"},
    },
}
FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["field", "code", "message"],
    "properties": {
        "field": {"type": "string", "nullable": True, "description": "Dotted path; null for the whole body."},
        "code": {"type": "string", "example": "max_length"},
        "message": {"type": "string"},
    },
}

# Statuses every operation can answer, and those of operations with a request body.
COMMON_PROBLEMS: dict[int, list[str]] = {
    400: ["validation_error"],
    401: ["not_authenticated", "token_not_valid"],
    406: ["not_acceptable"],
    429: ["throttled"],
    500: ["internal_error"],
    503: ["ledger_unavailable", "ledger_busy"],
}
BODY_PROBLEMS: dict[int, list[str]] = {
    400: ["malformed_json", "unknown_field", "duplicate_field"],
    413: ["payload_too_large"],
    415: ["unsupported_media_type"],
}
# On every problem response: the codes it may carry, machine-readable (the description says the same
# to a person). The contract test holds each answer's ``code`` to its response's list.
PROBLEM_CODES_EXTENSION = "x-problem-codes"
# Those of operations with query parameters (``StrictInputSerializer`` filters).
QUERY_PROBLEMS: dict[int, list[str]] = {400: ["unknown_field"]}
_RETRY_AFTER_HEADER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}

# The answer to a retry with an idempotency key already seen: the first request's outcome, replayed.
_REPLAYED_HEADER = {
    REPLAYED_HEADER: {
        "schema": {"type": "string", "enum": ["true"]},
        "description": "`true` when this is the stored answer to an earlier request with the same key.",
    }
}
# A method a path does not list: DRF answers it for every view, with ``Allow`` naming those it does.
# OpenAPI has no place for the responses of operations that do not exist, so it is one shared
# response component, named in the API's description.
METHOD_NOT_ALLOWED_RESPONSE: dict[str, Any] = {
    "description": "Problem; `code` is `method_not_allowed`: the path does not take this method.",
    "headers": {"Allow": {"schema": {"type": "string"}, "required": True, "description": "The methods it takes."}},
    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def problems(responses: dict[int, list[str]]) -> dict[str, Any]:
    """``extend_schema(extensions=problems({404: ["account_not_found"]}))``: the problem responses
    of one operation besides the common ones, with the codes each can carry."""
    return {"x-problems": {str(status): codes for status, codes in responses.items()}}


def links(responses: dict[int, dict[str, tuple[str, str]]]) -> dict[str, Any]:
    """``extend_schema(extensions=... | links({201: {"transfer": ("transfers_retrieve", "transfer_id")}}))``:
    OpenAPI links from a response to the operations that take the ``id`` it carries as the named
    parameter (a client, and a stateful test, follow them: create, then get or reverse)."""
    return {
        "x-links": {
            str(status): {name: [operation_id, parameter] for name, (operation_id, parameter) in targets.items()}
            for status, targets in responses.items()
        }
    }


def replayable(*statuses: int) -> dict[str, Any]:
    """``extend_schema(extensions=problems(...) | replayable(201, 422))``: the statuses a
    retry with the same idempotency key may answer with the first request's stored outcome, which
    then carries ``Idempotent-Replayed: true``."""
    return {"x-replayed": [str(status) for status in statuses]}


def problem_schema_postprocess(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular hook: add the Problem schema and every problem response to every operation,
    ``Idempotent-Replayed`` to the responses a replay may give, and the shared 405 response."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["FieldError"] = FIELD_ERROR_SCHEMA
    result["components"].setdefault("responses", {})["MethodNotAllowed"] = METHOD_NOT_ALLOWED_RESPONSE
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            merged: dict[int, list[str]] = {status: list(codes) for status, codes in COMMON_PROBLEMS.items()}
            sources = [BODY_PROBLEMS] if "requestBody" in operation else []
            if any(parameter.get("in") == "query" for parameter in operation.get("parameters", [])):
                sources.append(QUERY_PROBLEMS)
            own = {int(status): codes for status, codes in operation.pop("x-problems", {}).items()}
            for source in [*sources, own]:
                for status, codes in source.items():
                    merged.setdefault(status, [])
                    merged[status].extend(code for code in codes if code not in merged[status])
            for status in sorted(merged):
                response: dict[str, Any] = {
                    "description": "Problem; `code` is one of: " + ", ".join(f"`{c}`" for c in merged[status]),
                    "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                    PROBLEM_CODES_EXTENSION: merged[status],
                }
                if status in (429, 503):
                    response["headers"] = _RETRY_AFTER_HEADER
                operation["responses"][str(status)] = response
            for status in operation.pop("x-replayed", []):
                response = operation["responses"][status]
                response["headers"] = {**response.get("headers", {}), **_REPLAYED_HEADER}
            for status, targets in operation.pop("x-links", {}).items():
                operation["responses"][status]["links"] = {
                    name: {"operationId": operation_id, "parameters": {parameter: "$response.body#/id"}}
                    for name, (operation_id, parameter) in targets.items()
                }
    return result
