"""Placeholder until the partner API lands: render ApplicationError as problem+json."""

from __future__ import annotations

from typing import Any

from rest_framework.response import Response
from rest_framework.views import exception_handler

from bankcore.errors import ApplicationError


def problem_response(exc: Exception, context: dict[str, Any]) -> Any:
    if isinstance(exc, ApplicationError):
        body = {"type": f"about:blank#{exc.code}", "status": exc.http_status, **exc.as_dict()}
        return Response(body, status=exc.http_status, content_type="application/problem+json")
    return exception_handler(exc, context)
