"""What reads a request body: a JSON parser that refuses bad input at the door (size limit,
another charset, malformed or too deeply nested JSON, a key given twice in one object)."""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import JSONParser
from rest_framework.utils import json as drf_json

from bankcore.api.problems import DuplicateField, PayloadTooLarge


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
        repeated = ""
        for key, _ in pairs:
            if key in seen:
                repeated = key
                break
            seen.add(key)
        raise DuplicateField(
            f"The field {repeated[:100]!r} is given more than once.",
            extra={
                "errors": [{"field": repeated[:100], "code": DuplicateField.code, "message": "Given more than once."}]
            },
        )
    return data
