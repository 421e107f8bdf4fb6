"""The partner API's error contract: every failure is RFC 9457 ``application/problem+json``.

A problem has ``type``, ``title``, ``status``, ``detail``, a stable machine ``code`` (the engine's
codes: ``insufficient_funds``, ``daily_limit_exceeded``…), the ``request_id`` to quote to support
and, for invalid input, ``errors``: one ``{"field", "code", "message"}`` per field. Never a stack
trace, never HTML, never a 500 for bad input.

Here too is what refuses bad input at the door before a view runs: the JSON parser (size limit,
malformed or too deeply nested JSON, a key given twice in one object), the strict serializer base
(unknown fields), strict amount and integer fields (no whitespace trimmed, no other spelling of a
number) and the OpenAPI hook that documents every problem response.
"""

from __future__ import annotations

import codecs
import logging
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core import exceptions as django_exceptions
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import escape
from django.views import defaults as django_defaults
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.utils import json as drf_json
from rest_framework.views import set_rollback

from bankcore.db import FILTER_YEARS, LockConflictGaveUp
from bankcore.errors import ApplicationError, InvalidAccountNumber, ValidationFailed
from bankcore.money import InvalidAmount, InvalidCurrency
from bankcore.paths import is_api_request

logger = logging.getLogger("bankcore.api")

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:bankcore:problem:"
# Seconds a client should wait before retrying when a database is down or busy.
UNAVAILABLE_RETRY_AFTER = 1


# --- errors raised at the door --------------------------------------------------------------------


class UnknownField(ValidationFailed):
    code = "unknown_field"
    title = "Unknown field"


class DuplicateField(ValidationFailed):
    code = "duplicate_field"
    title = "Duplicate field"


class IdempotencyKeyRequired(ValidationFailed):
    code = "idempotency_key_required"
    title = "Idempotency-Key header required"


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


# --- the problem document -------------------------------------------------------------------------


def problem_body(
    *, status: int, code: str, title: str, detail: str, request: Any = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"{PROBLEM_TYPE_PREFIX}{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if request is not None:
        body["instance"] = request.path
        body["request_id"] = getattr(request, "request_id", "")
    body.update(extra)
    return body


def problem_json_response(
    request: HttpRequest, *, status: int, code: str, title: str, detail: str, **extra: Any
) -> HttpResponse:
    """The problem as a plain Django response, for code that runs outside DRF's views."""
    body = problem_body(status=status, code=code, title=title, detail=detail, request=request, **extra)
    response = JsonResponse(body, status=status, content_type=PROBLEM_CONTENT_TYPE)
    if status == 503:
        response["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
    return response


def _field_errors(detail: Any, prefix: str = "") -> list[dict[str, Any]]:
    """DRF's nested error detail, flattened to one entry per message with a dotted field path
    (``None`` for errors of the body as a whole)."""
    if isinstance(detail, Mapping):
        errors: list[dict[str, Any]] = []
        for key, value in detail.items():
            name = "" if key == api_settings.NON_FIELD_ERRORS_KEY else str(key)
            errors.extend(_field_errors(value, f"{prefix}.{name}" if prefix and name else (name or prefix)))
        return errors
    if isinstance(detail, list):
        errors = []
        for index, item in enumerate(detail):
            nested = isinstance(item, (Mapping, list))
            errors.extend(_field_errors(item, f"{prefix}.{index}" if nested and prefix else prefix))
        return errors
    return [{"field": prefix or None, "code": getattr(detail, "code", None) or "invalid", "message": str(detail)}]


# Field-error codes that name the problem better than "validation_error" when they are the only
# kind of error in a request: a client matching on ``code`` then needs no look at ``errors``.
_PROMOTED_FIELD_CODES: dict[str, str] = {
    UnknownField.code: UnknownField.title,
    InvalidAmount.code: InvalidAmount.title,
    InvalidCurrency.code: InvalidCurrency.title,
    InvalidAccountNumber.code: InvalidAccountNumber.title,
}

# simplejwt's codes, folded into ours (a token of a deleted or changed user is just not valid).
_AUTH_CODES = {
    "no_active_account": "invalid_credentials",
    "token_not_valid": "token_not_valid",
    "user_not_found": "token_not_valid",
    "user_inactive": "token_not_valid",
    "password_changed": "token_not_valid",
    "not_partner": "token_not_valid",
    "bad_authorization_header": "token_not_valid",
}


def _auth_problem(exc: exceptions.APIException) -> tuple[str, str]:
    detail = exc.detail
    if isinstance(detail, Mapping):
        raw_code, message = str(detail.get("code", "")), str(detail.get("detail", "Authentication failed."))
    else:
        raw_code, message = str(getattr(detail, "code", "") or ""), str(detail)
    if isinstance(exc, exceptions.NotAuthenticated):
        return "not_authenticated", message
    return _AUTH_CODES.get(raw_code, "authentication_failed"), message


def _problem_of(exc: Exception) -> tuple[int, str, str, str, dict[str, Any], dict[str, str]]:
    """(status, code, title, detail, extra members, headers) for any exception."""
    headers: dict[str, str] = {}
    if isinstance(exc, ApplicationError):
        if exc.replayed:
            headers["Idempotent-Replayed"] = "true"
        if exc.http_status == 503:
            headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
        if exc.http_status == 429:
            headers["Retry-After"] = str(exc.extra.get("retry_after", 1))
        return exc.http_status, exc.code, exc.title, str(exc.detail), dict(exc.extra), headers
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, django_exceptions.PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, django_exceptions.RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, django_exceptions.SuspiciousOperation):
        return 400, "bad_request", "Bad request", "The request was refused as malformed.", {}, headers
    elif isinstance(exc, django_exceptions.ValidationError):
        # A value that passed the serializers but not a model field (e.g. a crafted cursor).
        errors = [{"field": None, "code": "invalid", "message": str(message)} for message in exc.messages]
        return 400, "validation_error", "Invalid input", "The request is not valid.", {"errors": errors}, headers

    if isinstance(exc, exceptions.ValidationError):
        errors = _field_errors(exc.detail)
        codes = {error["code"] for error in errors}
        if len(codes) == 1 and (code := next(iter(codes))) in _PROMOTED_FIELD_CODES:
            title = _PROMOTED_FIELD_CODES[code]
        else:
            code, title = "validation_error", "Invalid input"
        detail = str(errors[0]["message"]) if len(errors) == 1 else "The request is not valid; see errors."
        return 400, str(code), title, detail, {"errors": errors}, headers
    if isinstance(exc, exceptions.ParseError):
        return 400, "malformed_json", "Malformed JSON", str(exc.detail), {}, headers
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        code, message = _auth_problem(exc)
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = str(auth_header)
        if exc.status_code == 403:  # no authenticator could have helped (DRF's rule)
            return 403, "permission_denied", "Permission denied", message, {}, headers
        title = "Authentication required" if code == "not_authenticated" else "Authentication failed"
        return 401, code, title, message, {}, headers
    if isinstance(exc, exceptions.Throttled):
        wait = max(1, math.ceil(getattr(exc, "wait", None) or 1))
        headers["Retry-After"] = str(wait)
        detail = f"Too many requests; retry in {wait} second{'s' if wait != 1 else ''}."
        return 429, "throttled", "Too many requests", detail, {"retry_after": wait}, headers
    if isinstance(exc, exceptions.APIException):
        titles = {
            403: ("permission_denied", "Permission denied"),
            404: ("not_found", "Not found"),
            405: ("method_not_allowed", "Method not allowed"),
            406: ("not_acceptable", "Not acceptable"),
            413: ("payload_too_large", "Payload too large"),
            415: ("unsupported_media_type", "Unsupported media type"),
        }
        code, title = titles.get(exc.status_code, (str(exc.default_code), "Request refused"))
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.default_detail)
        return exc.status_code, code, title, str(detail), {}, headers
    if isinstance(exc, LockConflictGaveUp):
        headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
        return 503, "ledger_busy", "The account is busy; try again", "Please retry shortly.", {}, headers
    if isinstance(exc, (OperationalError, InterfaceError)):
        headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
        detail = "A database did not answer; please retry shortly."
        return 503, "ledger_unavailable", "A ledger database is unavailable", detail, {}, headers
    return 500, "internal_error", "Internal error", "An unexpected error occurred; quote the request id.", {}, headers


def problem_response(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER (set in ``bankcore.settings.api``): any exception
    of an API view becomes a problem response. Unexpected ones are logged with their traceback and
    answered 500 ``internal_error`` without any detail."""
    request = context.get("request")
    status, code, title, detail, extra, headers = _problem_of(exc)
    if status >= 500:
        request_id = getattr(request, "request_id", "")
        if status == 500:
            logger.error("API %s failed (request %s)", getattr(request, "path", "?"), request_id, exc_info=exc)
        else:
            logger.warning("API %s: %s (request %s): %r", getattr(request, "path", "?"), code, request_id, exc)
    set_rollback()
    body = problem_body(status=status, code=code, title=title, detail=detail, request=request, **extra)
    return Response(body, status=status, headers=headers, content_type=PROBLEM_CONTENT_TYPE)


# --- Django's own error views, for paths under /api/ ----------------------------------------------
#
# Errors raised outside DRF's views (a middleware, a URL that matches nothing) are rendered by
# Django's handler400/403/404/500. The root URLconf points them here: problem+json under /api/,
# Django's usual pages elsewhere (the admin).


@csrf_exempt
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The last route under /api/: nothing there, as a problem (and no slash-appending redirect)."""
    return problem_json_response(request, status=404, code="not_found", title="Not found", detail="No such endpoint.")


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not is_api_request(request):
        return django_defaults.bad_request(request, exception)  # type: ignore[arg-type]
    if isinstance(exception, django_exceptions.RequestDataTooBig):
        return problem_json_response(
            request, status=413, code="payload_too_large", title="Payload too large", detail=str(PayloadTooLarge())
        )
    return problem_json_response(
        request, status=400, code="bad_request", title="Bad request", detail="The request was refused as malformed."
    )


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not is_api_request(request):
        if exception is not None and exception.args:
            # A refusal that says why (the back office's, e.g. a superuser outside the roles). Django
            # hands it to a 403.html template as ``exception``; without one it would be dropped.
            details = escape(str(exception))
            return HttpResponseForbidden(
                django_defaults.ERROR_PAGE_TEMPLATE % {"title": "403 Forbidden", "details": details}
            )
        return django_defaults.permission_denied(request, exception)  # type: ignore[arg-type]
    return problem_json_response(
        request, status=403, code="permission_denied", title="Permission denied", detail="Permission denied."
    )


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not is_api_request(request):
        return django_defaults.page_not_found(request, exception)  # type: ignore[arg-type]
    return api_not_found(request)


def handler500(request: HttpRequest) -> HttpResponse:
    if not is_api_request(request):
        return django_defaults.server_error(request)
    return problem_json_response(
        request,
        status=500,
        code="internal_error",
        title="Internal error",
        detail="An unexpected error occurred; quote the request id.",
    )


# --- refusing bad input at the door ---------------------------------------------------------------


class LimitedJSONParser(JSONParser):
    """JSON only, in UTF-8 (415 for a body declared in another charset), at most
    ``API_MAX_BODY_BYTES`` (413 beyond), and no recursion bomb (400).

    JSON exchanged between systems is UTF-8 (RFC 8259 8.1). DRF's parser decodes with whatever
    codec the ``charset`` parameter names, and Python's codecs include some that are no text
    encoding at all: ``charset=rot13`` or ``base64`` made it raise a TypeError (a 500), and a body
    declared ``latin-1`` would be read differently from how a UTF-8 client meant it."""

    # The setting that holds the limit (a view of larger documents names its own).
    limit_setting = "API_MAX_BODY_BYTES"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = getattr(settings, self.limit_setting)
        request = (parser_context or {}).get("request")
        # The charset declared, known to Python or not (Django's request.encoding keeps only one
        # codecs knows: charset=klingon would have been read as UTF-8).
        charset = str((getattr(request, "content_params", None) or {}).get("charset", "utf-8"))
        try:
            utf8 = codecs.lookup(charset).name == "utf-8"
        except LookupError:
            utf8 = False
        if not utf8:
            raise exceptions.UnsupportedMediaType(
                media_type or "", detail=f"JSON bodies are UTF-8; charset={charset[:40]} is not accepted."
            )
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and str(declared).isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"The request body has at most {limit} bytes.")
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"The request body has at most {limit} bytes.")
        try:
            # DRF's parse, with every object's keys checked for repeats.
            parse_constant = drf_json.strict_constant if self.strict else None
            return drf_json.loads(
                raw.decode("utf-8"), parse_constant=parse_constant, object_pairs_hook=_object_without_repeats
            )
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each given once. RFC 8259 leaves a repeated key's meaning to
    the reader, and readers differ (Python keeps the last, others the first or refuse): an
    ``{"amount": "1.00", "amount": "2.00"}`` that a gateway logs as 1.00 and this API books as 2.00
    is refused instead, 400 ``duplicate_field``."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))  # type: ignore[func-returns-value]
        raise DuplicateField(
            f"The field {repeated[:100]!r} is given more than once.",
            extra={
                "errors": [{"field": repeated[:100], "code": DuplicateField.code, "message": "Given more than once."}]
            },
        )
    return data


class JSONNegotiation(DefaultContentNegotiation):
    """DRF's content negotiation, answered at once where it can only pick JSON: a view whose one
    renderer is JSON, asked with no ``Accept``, ``*/*`` or ``application/json`` and no format
    override. Every other request, ``Accept: text/html`` (406) included, goes through DRF's, which
    parses the header into media types for every request (docs/performance.md)."""

    _AT_ONCE = frozenset({"*/*", "application/json"})

    def select_renderer(self, request: Any, renderers: Any, format_suffix: Any = None) -> Any:
        if (
            format_suffix is None
            and len(renderers) == 1
            and renderers[0].media_type == "application/json"
            and request.META.get("HTTP_ACCEPT", "*/*") in self._AT_ONCE
            and self.settings.URL_FORMAT_OVERRIDE not in request.query_params
        ):
            return renderers[0], renderers[0].media_type
        return super().select_renderer(request, renderers, format_suffix)


class StrictInputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """An input serializer that refuses fields it does not know (400 ``unknown_field``): a typo in
    an optional field must not be silently ignored when money moves.

    Its fields are built and bound once per class and shared by every instance (see ``fields``)."""

    @cached_property
    def fields(self) -> Any:
        """The class's one set of fields, bound to a template instance with no data, no context and
        not partial. DRF deep-copies every declared field for every instance (re-running each
        field's ``__init__``), a large share of an API transfer's CPU (docs/performance.md). Sharing
        is safe because a field keeps only its configuration: what validation finds lives on the
        serializer (``_validated_data``, ``_errors``), and what a field reads from its root
        (``partial``, ``context``) is the template's. An instance that is partial or has a context
        gets its own fields, as in DRF."""
        if self.partial or self._context:
            return serializers.Serializer.fields.func(self)  # type: ignore[attr-defined]
        cls = type(self)
        shared = cls.__dict__.get("_shared_fields")
        if shared is None:  # two threads may both build it; either result serves
            template = cls()
            shared = serializers.Serializer.fields.func(template)  # type: ignore[attr-defined]
            cls._shared_fields = shared  # type: ignore[attr-defined]
        return shared

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = [str(name) for name in data if name not in self.fields]
            if unknown:
                raise serializers.ValidationError(
                    {
                        name[:100]: [serializers.ErrorDetail("Unknown field.", code=UnknownField.code)]
                        for name in unknown
                    }
                )
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """An integer as a JSON number or a string of ASCII digits, nothing else: DRF's read " 12 ",
    "12.0" and "1_2" all as 12."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and not (data.isascii() and data.isdigit()):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class StrictInputSerializerScheme(OpenApiSerializerExtension):
    """In the schema, a strict input serializer's object takes no other property
    (``additionalProperties: false``), as it refuses them (400 ``unknown_field``)."""

    target_class = StrictInputSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = False
        return schema


class StrictCharField(serializers.CharField):
    """Text only: DRF's CharField would turn a JSON number or boolean into its string."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


# A positive amount in its plain form: no sign, no leading zero, at most 18 digits before the point
# (what the column holds) and two after. The schema states it and the door holds the API to it.
AMOUNT_PATTERN = r"^(0\.(0[1-9]|[1-9][0-9]?)|[1-9][0-9]{0,17}(\.[0-9]{1,2})?)$"
_AMOUNT_FORM = re.compile(AMOUNT_PATTERN)


@extend_schema_field({"type": "string", "pattern": AMOUNT_PATTERN, "maxLength": 21, "example": "125.50"})
class AmountField(serializers.Field):  # type: ignore[type-arg]
    """An amount: a JSON string in the form ``AMOUNT_PATTERN`` ("125.50"), checked by
    ``bankcore.money.money_parse``."""

    def to_internal_value(self, data: Any) -> Any:
        from bankcore.money import money_parse

        if not isinstance(data, str):
            raise serializers.ValidationError(
                'Amounts are JSON strings, e.g. "125.50", never numbers.', code=InvalidAmount.code
            )
        if not _AMOUNT_FORM.fullmatch(data):
            raise serializers.ValidationError(
                "An amount is a positive decimal string with at most two decimal places and no leading "
                'zero, e.g. "125.50".',
                code=InvalidAmount.code,
            )
        try:
            return money_parse(data)
        except InvalidAmount as refused:
            raise serializers.ValidationError(refused.detail, code=refused.code) from None

    def to_representation(self, value: Any) -> str:
        return str(value)


class ExactRegexField(serializers.RegexField):
    """DRF's RegexField held to the whole text, untrimmed, as the schema's ECMA pattern reads: DRF
    trims surrounding whitespace first and its validator searches, so ``^[0-9]{2}$`` let "01\\n"
    through."""

    def __init__(self, regex: str, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(regex, **kwargs)
        self._whole = re.compile(regex)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or not self._whole.fullmatch(data):
            self.fail("invalid")
        return str(super().to_internal_value(data))


@extend_schema_field({"type": "string", "pattern": "^[A-Z]{3}$", "example": "CNY"})
class CurrencyField(serializers.Field):  # type: ignore[type-arg]
    """An ISO 4217 code, checked by ``bankcore.money.currency_parse``."""

    def to_internal_value(self, data: Any) -> str:
        from bankcore.money import currency_parse

        try:
            return currency_parse(data)
        except InvalidCurrency as refused:
            raise serializers.ValidationError(refused.detail, code=refused.code) from None

    def to_representation(self, value: Any) -> str:
        return str(value)


class BoundedDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date or date-time (a date means its midnight in ``TIME_ZONE``), within years
    that every time zone conversion on the way to the database survives.

    A value outside them is refused (``overflow``), or, with ``clamp=True``, taken as the nearest
    end of them: for a filter's bound, where every row lies within those years, that selects the
    same rows, so any date-time the schema allows is answered."""

    def __init__(self, *, clamp: bool = False, **kwargs: Any) -> None:
        self.clamp = clamp
        super().__init__(**kwargs)

    def _outside(self, value: Any) -> Any:
        if not self.clamp:
            self.fail("overflow")
        if value.year < FILTER_YEARS.start:
            return timezone.make_aware(datetime(FILTER_YEARS.start, 1, 1))
        return timezone.make_aware(datetime(FILTER_YEARS.stop - 1, 12, 31, 23, 59, 59, 999999))

    def enforce_timezone(self, value: Any) -> Any:
        # Checked before DRF makes a naive value aware (local time), whose check of the result
        # converts it to UTC uncaught (year 1 at +08:00 is year 0 there: an OverflowError, a 500),
        # and before DRF converts an aware one to local time (which overflows the same way).
        if value.year not in FILTER_YEARS:
            return self._outside(value)
        return super().enforce_timezone(value)

    def to_internal_value(self, value: Any) -> Any:
        parsed = super().to_internal_value(value)
        if parsed.year not in FILTER_YEARS:  # in local time: 9000-12-31T23:59-12:00 is 9001 here
            return self._outside(parsed)
        return parsed


class DateTimeCursorPagination(CursorPagination):
    """DRF's cursor pagination for an ordering by a date-time field, whose cursor's position (the
    last row's date-time, which a client can craft) is checked as ``BoundedDateTimeField`` checks
    a filter: 400 ``validation_error`` on ``cursor``, not a position the database cannot take
    (year 1 overflowed converting it to UTC, a 500)."""

    def decode_cursor(self, request: Any) -> Any:
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                BoundedDateTimeField().run_validation(cursor.position)
            except serializers.ValidationError as invalid:
                raise serializers.ValidationError({self.cursor_query_param: invalid.detail}) from None
        return cursor


# --- OpenAPI: every problem response documented ---------------------------------------------------

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
REPLAYED_HEADER = "Idempotent-Replayed"
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
