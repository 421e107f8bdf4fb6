"""The request half of the audit file: one line per mutating request to the admin or the API, with
the query and the request body (masked; passwords dropped) and the response status, never the
response body. The events the request caused carry the same request id."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from audit.logfile import audit_log_write
from bankcore.actors import client_ip
from bankcore.paths import ADMIN_PATH_PREFIX, API_PATH_PREFIX, is_api_request

MUTATING_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
AUDITED_PREFIXES = (ADMIN_PATH_PREFIX, API_PATH_PREFIX)


def _form_fields(text: str) -> dict[str, Any]:
    fields: dict[str, list[str]] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        fields.setdefault(key, []).append(value)
    return {key: values if len(values) > 1 else values[0] for key, values in fields.items()}


def _request_body(request: HttpRequest) -> Any:
    """The body as data the masking can walk key by key: JSON, or form fields. Anything else (text,
    XML, JSON that does not parse, a JSON body cut at ``AUDIT_LOG_MAX_BODY_BYTES``) is free text
    that may hold a password where no key names it: only its content type and size are written."""
    content_type = request.content_type or ""
    if content_type.startswith("multipart/") and not is_api_request(request):
        # Streamed uploads cannot be read twice: the form fields, never the files. (Not for the
        # API, which takes JSON only: read as a form here, its body reached DRF as an empty form,
        # a 400 for missing fields instead of the 415 it is.)
        return {key: values if len(values) > 1 else values[0] for key, values in request.POST.lists()}
    body = request.body
    text = body[: settings.AUDIT_LOG_MAX_BODY_BYTES].decode("utf-8", errors="replace")
    if not text:
        return None
    if content_type == "application/json" or content_type.endswith("+json") or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if data is not None and not isinstance(data, str):  # a bare JSON string is free text too
            return data
    if content_type == "application/x-www-form-urlencoded":
        return _form_fields(text)
    return {"redacted": "not a JSON object or form data", "content_type": content_type or None, "bytes": len(body)}


def _query_fields(request: HttpRequest) -> dict[str, Any] | None:
    """The query string as fields, like a form body, so that the line's masking (``audit_log_write``)
    applies the same key rules to it: a key naming a password, secret or token dropped, balances and
    account numbers masked. A part without "=" is a bare value, free text that may be a token where
    no key names it: left out, as a free-text body is."""
    text = request.META.get("QUERY_STRING", "")
    fields = _form_fields("&".join(part for part in text.split("&") if "=" in part))
    return fields or None


class AuditRequestMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method not in MUTATING_METHODS or not request.path.startswith(AUDITED_PREFIXES):
            return self.get_response(request)
        try:
            body = _request_body(request)
        except Exception:
            body = "<unreadable>"
        response = self.get_response(request)
        user = getattr(request, "user", None)
        audit_log_write(
            {
                "type": "request",
                "request_id": getattr(request, "request_id", ""),
                "method": request.method,
                "path": request.path,
                "query": _query_fields(request),
                "user": user.get_username() if user is not None and user.is_authenticated else None,
                "ip": client_ip(request),
                "status": response.status_code,
                "body": body,
            }
        )
        return response
