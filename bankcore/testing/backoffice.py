"""Sending a back-office form as a teller does, for the tests: the form's own button, which
answers with the review page, then "Confirm" with the signed confirmation that page carries
(``backoffice.review``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

FORM_CONTENT = "application/x-www-form-urlencoded"


def _pairs(fields: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
    """The body's fields in order; a list value repeats its name, as a browser sends it."""
    items = fields.items() if isinstance(fields, Mapping) else fields
    return [
        (name, str(value)) for name, given in items for value in (given if isinstance(given, list | tuple) else [given])
    ]


def post_form(client: Any, url: str, fields: Mapping[str, Any] | Iterable[tuple[str, Any]], **extra: Any) -> Any:
    """One POST of ``fields`` as a browser encodes them (a lone surrogate as UTF-8 would give it)."""
    body = urlencode(_pairs(fields), errors="surrogatepass").encode("ascii")
    return client.post(url, body, content_type=FORM_CONTENT, **extra)


def post_reviewed(client: Any, url: str, fields: Mapping[str, Any] | Iterable[tuple[str, Any]], **extra: Any) -> Any:
    """Post ``fields`` for their review, then confirm what the review page shows: the answer to
    the confirmation (``follow`` and other ``extra`` as for ``Client.post``). A form refused before
    its review (invalid, naming an account that is none, not allowed) comes back as refused."""
    pairs = _pairs(fields)
    review = post_form(client, url, [*pairs, ("review", "Review")], **extra)
    token = review.context.get("confirmation") if review.context is not None else None
    if not token:
        return review
    return post_form(client, url, [*pairs, ("confirmation", token)], **extra)
