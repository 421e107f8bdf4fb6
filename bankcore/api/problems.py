"""The partner API's error contract: every failure is RFC 9457 ``application/problem+json``.

A problem has ``type``, ``title``, ``status``, ``detail``, a stable machine ``code`` (the engine's
codes: ``insufficient_funds``, ``daily_limit_exceeded``…), the ``request_id`` to quote to support
and, for invalid input, ``errors``: one ``{"field", "code", "message"}`` per field. Never a stack
trace, never HTML, never a 500 for bad input.

Here are DRF's exception handler (``problem_response``) and Django's own error views for paths
under /api/; the OpenAPI side of the contract is ``bankcore.api.schema``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from django.core import exceptions as django_exceptions
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.utils.html import escape
from django.views import defaults as django_defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from bankcore.db import LockConflictGaveUp
from bankcore.errors import ApplicationError, InvalidAccountNumber, ValidationFailed
from bankcore.money import InvalidAmount, InvalidCurrency
from bankcore.paths import is_api_request

logger = logging.getLogger("bankcore.api")

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:bankcore:problem:"
# Seconds a client should wait before retrying when a database is down or busy.
UNAVAILABLE_RETRY_AFTER = 1
# The answer to a retry with an idempotency key already seen: the first request's outcome, replayed.
REPLAYED_HEADER = "Idempotent-Replayed"


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
            headers[REPLAYED_HEADER] = "true"
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


def handler400(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not is_api_request(request):
        return django_defaults.bad_request(request, exception)
    if isinstance(exception, django_exceptions.RequestDataTooBig):
        return problem_json_response(
            request, status=413, code="payload_too_large", title="Payload too large", detail=str(PayloadTooLarge())
        )
    return problem_json_response(
        request, status=400, code="bad_request", title="Bad request", detail="The request was refused as malformed."
    )


def handler403(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not is_api_request(request):
        if exception.args:
            # A refusal that says why (the back office's, e.g. a superuser outside the roles). Django
            # hands it to a 403.html template as ``exception``; without one it would be dropped.
            details = escape(str(exception))
            return HttpResponseForbidden(
                django_defaults.ERROR_PAGE_TEMPLATE % {"title": "403 Forbidden", "details": details}
            )
        return django_defaults.permission_denied(request, exception)
    return problem_json_response(
        request, status=403, code="permission_denied", title="Permission denied", detail="Permission denied."
    )


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not is_api_request(request):
        return django_defaults.page_not_found(request, exception)
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
