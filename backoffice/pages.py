"""What every back-office page does the same way: who acts, whether they may, the page's frame,
and a service's refusal as the teller reads it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse

from audit.roles import SUPERUSER_WITHOUT_ROLE, role_permits
from audit.services import audit_refusal_record
from backoffice.display import in_words
from bankcore.actors import Actor, Channel, actor_from_request
from bankcore.errors import ApplicationError


def admin_actor(request: HttpRequest) -> Actor:
    return actor_from_request(request, channel=Channel.ADMIN)


def may(request: HttpRequest, perm: str) -> bool:
    """Whether the user holds ``perm`` to act in the back office. Reading (``view_…``) follows
    Django's permissions, as the admin's own lists do; acting needs a role: a superuser's blanket
    permissions move no money and change no account (``audit.roles.role_permits``)."""
    if perm.split(".", 1)[-1].startswith("view_"):
        return bool(request.user.has_perm(perm))
    return role_permits(request.user, perm)


def require_perm(request: HttpRequest, *perms: str) -> None:
    """Refuse (403, nothing done) unless the user may do all that is named (see ``may``); a
    superuser outside the roles is told why. The refusal is an audit event (``backoffice.refused``:
    who, which page, which permissions were missing)."""
    missing = [perm for perm in perms if not may(request, perm)]
    if not missing:
        return
    code = "superuser_without_role" if request.user.is_superuser else "permission_denied"
    match = request.resolver_match
    audit_refusal_record(
        actor=admin_actor(request),
        action="backoffice",
        object_type="page",
        object_id=(match.view_name if match else request.path)[:64],
        code=code,
        changes={"method": request.method, "path": request.path[:200], "missing": missing},
    )
    if request.user.is_superuser:
        raise PermissionDenied(SUPERUSER_WITHOUT_ROLE)
    raise PermissionDenied


def backoffice_render(
    request: HttpRequest, *, template: str, title: str, status: int = 200, **context: Any
) -> TemplateResponse:
    page = {**admin.site.each_context(request), "title": title, **context}
    return TemplateResponse(request, template, page, status=status)


def service_error(request: HttpRequest, error: ApplicationError) -> None:
    """A service's refusal, as the teller reads it, on a page that has no form to show it on."""
    messages.error(request, f"{in_words(error.detail)} ({error.code})")


# The field a service's refusal is about, by its code; an account's refusal names its side.
REFUSAL_FIELDS: dict[str, str] = {
    "invalid_amount": "amount",
    "amount_above_maximum": "amount",
    "insufficient_funds": "amount",
    "daily_limit_exceeded": "amount",
    "invalid_reference": "reference",
    "same_account": "destination_account",
    "invalid_holder": "holder",
    "invalid_currency": "currency",
}
ACCOUNT_REFUSALS = {
    "invalid_account_number",
    "account_not_found",
    "account_frozen",
    "account_closed",
    "internal_account",
    "currency_mismatch",
}


def refusal_on_form(form: forms.Form, error: ApplicationError) -> None:
    """A service's refusal beside the field it is about, in words; its code stays on the page,
    small, for whoever reports it. One about no field of the form goes above the fields."""
    field = REFUSAL_FIELDS.get(error.code)
    if error.code in ACCOUNT_REFUSALS:
        field = "destination_account" if "destination" in error.detail else "source_account"
    if field == "amount" and "amount" not in form.fields and "opening_deposit" in form.fields:
        field = "opening_deposit"
    message = forms.ValidationError(error.detail.replace("%", "%%"), code=error.code, params={"shown_code": error.code})
    form.add_error(field if field in form.fields else None, message)


def sent_again(outcome: Any) -> str:
    """What a message adds when its form's key had been seen: the page was sent again, nothing moved
    twice."""
    return " — this form had been sent already; nothing was done twice" if getattr(outcome, "replayed", False) else ""


def person(user: Any) -> str:
    """A member of staff by name (their username when no name is recorded)."""
    if user is None:
        return "—"
    return user.get_full_name() or user.get_username()
