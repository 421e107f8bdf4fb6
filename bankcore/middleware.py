"""Request id: taken from nginx's ``X-Request-ID`` (or made up), kept on the request, echoed in
the response, and carried by every audit event and log line of the request (through the context
variable of ``bankcore.logging``).

And Django's session, CSRF, authentication and messages middleware for the back office only: the
partner API (``/api/``) authenticates with a JWT on every request (DRF), keeps no session, sets no
cookie and shows no message (``bankcore.fastpaths.BackOfficeOnly``).

And a guard on the admin's lookups and actions that the database cannot take."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.auth.middleware import AuthenticationMiddleware as DjangoAuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.exceptions import BadRequest, ValidationError
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware as DjangoCsrfViewMiddleware

from bankcore.db import FILTER_YEARS
from bankcore.fastpaths import BackOfficeOnly
from bankcore.logging import request_id_bound
from bankcore.paths import ADMIN_PATH_PREFIX, is_api_request

_VALID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]  # bankcore's own request attribute
        with request_id_bound(request_id):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


class SessionMiddleware(BackOfficeOnly, DjangoSessionMiddleware):
    pass


class AuthenticationMiddleware(BackOfficeOnly, DjangoAuthenticationMiddleware):
    """Under /api/ ``request.user`` is set by DRF's authentication, when the view runs."""


class MessageMiddleware(BackOfficeOnly, DjangoMessageMiddleware):
    pass


class CsrfViewMiddleware(BackOfficeOnly, DjangoCsrfViewMiddleware):
    """Every API view is CSRF-exempt already (DRF's, and a JWT is no ambient credential)."""

    def process_view(self, request: HttpRequest, callback: Any, callback_args: Any, callback_kwargs: Any) -> Any:
        if is_api_request(request):
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)


class AdminLookupGuardMiddleware:
    """A changelist lookup the database cannot take is a 400, not a 500. Django's admin passes any
    lookup on a model's own fields from the query string to the ORM, which fails only when the
    list is rendered, past the admin's own check of lookup parameters. Checked here for every
    admin page, before any of them runs:

    - a year (``<field>__year``, its ``__gte``, ``__lt``... forms, a date hierarchy's year) outside
      1900–9000: Django's year lookup raised ValueError or OverflowError for a year near or past
      the calendar's ends (``?created_at__year=99999`` or ``__year__gte=1``), on every changelist
      with a date field, django-axes' and auth's too;
    - a date or date-time outside those years compared with a date field (``created_at__gte=
      0001-01-01``): converting year 1 from TIME_ZONE to UTC overflowed;
    - any regular-expression lookup (``name__regex=(``): MariaDB refused an invalid pattern (error
      1139), and a valid one is a query the back office never offers (its search and filters use
      none), which a crafted one could make slow;
    - a changelist action (POST) on an ``_selected_action`` that is no primary key of the model
      (``abc``, empty, a UUID for a numeric id): Django's ``response_action`` filtered by it and
      raised ValueError (``delete_selected`` on users, ``run_tasks`` on periodic tasks).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(ADMIN_PATH_PREFIX):
            model = functools.cache(lambda: _admin_model(request))  # resolved once, and only if asked
            for name, values in request.GET.lists():
                _lookup_check(name, values, model)
            if request.method == "POST" and "action" in request.POST:
                _selection_check(request.POST.getlist("_selected_action"), model)
        return self.get_response(request)


_DATE_COMPARISONS = frozenset({"", "exact", "gt", "gte", "lt", "lte", "range", "in", "date"})
_YEARS = f"from {FILTER_YEARS[0]} to {FILTER_YEARS[-1]}"


def _lookup_check(name: str, values: list[str], model: Callable[[], Any]) -> None:
    """Refuse (BadRequest) a query parameter whose lookup the database cannot take (the class's
    docstring)."""
    lookups = name.split("__")[1:]
    if "regex" in lookups or "iregex" in lookups:
        raise BadRequest(f"{name}: regular-expression lookups are not accepted.")
    if "year" in lookups or "iso_year" in lookups:
        if not all(value.strip().isdigit() and int(value) in FILTER_YEARS for value in values):
            raise BadRequest(f"{name}: a year {_YEARS}.")
        return
    years = [_year_of(piece) for value in values for piece in value.split(",")]
    if any(year is not None and year not in FILTER_YEARS for year in years):
        if model() is not None and _compares_a_date(model(), name.split("__")):
            raise BadRequest(f"{name}: a date {_YEARS}.")


def _selection_check(selected: list[str], model: Callable[[], Any]) -> None:
    """Refuse a changelist action on a selection that is no primary key of the page's model."""
    if not selected or model() is None:
        return
    for value in selected:
        try:
            model()._meta.pk.to_python(value)
        except ValidationError:
            raise BadRequest(f"_selected_action: {value[:40]!r} is no {model()._meta.verbose_name}.") from None


def _admin_model(request: HttpRequest) -> Any:
    """The model of the admin page asked for (its ModelAdmin's), or None for any other page."""
    from django.urls import Resolver404, resolve

    try:
        match = resolve(request.path_info)
    except Resolver404:
        return None
    model_admin = getattr(match.func, "model_admin", None)  # set by ModelAdmin.get_urls
    return getattr(model_admin, "model", None)


def _compares_a_date(model: Any, parts: list[str]) -> bool:
    """Whether the lookup ``parts`` compares a date or date-time field of ``model`` (or of a
    model it relates to) with a value: the field path, then comparisons (``__date__gte``)."""
    from django.core.exceptions import FieldDoesNotExist
    from django.db import models

    opts, field, consumed = model._meta, None, 0
    for part in parts:
        try:
            field = opts.get_field(part)
        except FieldDoesNotExist:
            break
        consumed += 1
        if field.is_relation and field.related_model is not None:
            opts = field.related_model._meta
    rest = parts[consumed:]
    return isinstance(field, models.DateField) and len(rest) <= 2 and all(part in _DATE_COMPARISONS for part in rest)


def _year_of(value: str) -> int | None:
    """The year of an ISO date or date-time (its leading digits before a dash), or None."""
    head = value.strip().split("-", 1)
    if len(head) == 2 and head[0].isdigit() and head[1][:1].isdigit():
        return int(head[0])
    return None
