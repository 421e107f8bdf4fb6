"""The review page every money movement and change of state goes through, and the confirmation
that alone lets the form be carried out.

A valid form first comes back as its review: what will happen, to whom, and what it leaves. The
review page carries a signed confirmation (``django.core.signing``) bound to the user, the page's
address and exactly what the form says, for ``CONFIRMATION_MAX_AGE`` seconds. Only a POST with
such a confirmation is carried out; any other POST of the form — without one, with one for other
content or another user, expired or forged — shows the review page again and does nothing. A
double click on Confirm sends the same form twice: its idempotency key (``IdempotentForm``)
makes the second do nothing again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.core import signing
from django.http import HttpRequest, HttpResponse

from backoffice.pages import backoffice_render, refusal_on_form
from bankcore.errors import ApplicationError

CONFIRMATION_SALT = "backoffice.review.confirmation"
# Long enough to check the names with the customer, short enough that a page left open is not
# confirmed later by whoever finds it.
CONFIRMATION_MAX_AGE = 600
FORM_TEMPLATE = "admin/backoffice/form.html"

# Why a POST was not carried out, as the review page says it (none when it simply had no
# confirmation: the form's own "Review" button).
NOT_CONFIRMED = {
    "expired": "This review had expired: check it again, then confirm.",
    "other": "The confirmation was for something else: check what this page says, then confirm.",
    "forged": "The confirmation could not be read: check what this page says, then confirm.",
}


@dataclass
class Review:
    """What will happen, to whom, and what it leaves: the page a teller confirms."""

    headline: str
    rows: list[tuple[str, str]]
    warnings: list[str] = field(default_factory=list)
    note: str = ""


def _content(request: HttpRequest, form: forms.Form) -> str:
    """A digest of what is confirmed: where the form is sent and every value it carries."""
    values = {name: str(value) for name, value in form.cleaned_data.items()}
    text = json.dumps({"path": request.path, "form": values}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def confirmation_token(request: HttpRequest, form: forms.Form) -> str:
    """The confirmation a review page carries for this user and exactly this form."""
    return signing.dumps({"user": request.user.pk, "content": _content(request, form)}, salt=CONFIRMATION_SALT)


def confirmation_problem(request: HttpRequest, form: forms.Form) -> str | None:
    """None when the POST carries a valid confirmation of this user for exactly this form; else
    why not: "missing", "expired", "forged" or "other" (another form's, or another user's)."""
    token = request.POST.get("confirmation", "")
    if not token:
        return "missing"
    try:
        signed = signing.loads(token, salt=CONFIRMATION_SALT, max_age=CONFIRMATION_MAX_AGE)
    except signing.SignatureExpired:
        return "expired"
    except signing.BadSignature:
        return "forged"
    if signed != {"user": request.user.pk, "content": _content(request, form)}:
        return "other"
    return None


def review_or_form(
    request: HttpRequest, form: forms.Form, *, review: Callable[[], Review], **page: Any
) -> HttpResponse | None:
    """For a valid form: None when its POST carries the confirmation of exactly this form (carry
    it out); otherwise the review page (``review()``: what it will do), or with "Change" the form
    again. A refusal while reviewing (an account that is none) goes on the form."""
    page = {"template": FORM_TEMPLATE, "form": form, "reviewed": True, **page}
    if "edit" in request.POST:
        return backoffice_render(request, review=None, **page)
    problem = confirmation_problem(request, form)
    if problem is None:
        return None
    try:
        shown = review()
    except ApplicationError as error:
        refusal_on_form(form, error)
        return backoffice_render(request, review=None, **page)
    return backoffice_render(
        request,
        review=shown,
        confirmation=confirmation_token(request, form),
        not_confirmed=NOT_CONFIRMED.get(problem),
        **page,
    )
