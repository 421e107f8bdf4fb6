"""Request id: taken from nginx's ``X-Request-ID`` (or made up), kept on the request, echoed in
the response, and carried by every audit event and log line of the request (through the context
variable of ``bankcore.logging``).

And Django's session, CSRF, authentication and messages middleware for the back office only: the
partner API (``/api/``) authenticates with a JWT on every request (DRF), keeps no session, sets no
cookie and shows no message, and skipping the four saved a few percent of its workers' CPU.

And django-prometheus' two middleware, each labelled child looked up once per process."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from django.contrib.auth.middleware import AuthenticationMiddleware as DjangoAuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware as DjangoCsrfViewMiddleware
from django.utils.deprecation import MiddlewareMixin
from django_prometheus.middleware import PrometheusAfterMiddleware as DjangoPrometheusAfterMiddleware
from django_prometheus.middleware import PrometheusBeforeMiddleware as DjangoPrometheusBeforeMiddleware

from bankcore.logging import request_id_bound
from bankcore.paths import is_api_request

_VALID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        with request_id_bound(request_id):
            response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


class _BackOfficeOnly(MiddlewareMixin):
    """Runs the Django middleware it is mixed into except for the partner API, whose requests go
    straight on. Subclasses of Django's own, so that the admin's checks (admin.E408–E410) still
    find them in MIDDLEWARE."""

    def __call__(self, request: HttpRequest) -> Any:
        if is_api_request(request):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(_BackOfficeOnly, DjangoSessionMiddleware):
    pass


class AuthenticationMiddleware(_BackOfficeOnly, DjangoAuthenticationMiddleware):
    """Under /api/ ``request.user`` is set by DRF's authentication, when the view runs."""


class MessageMiddleware(_BackOfficeOnly, DjangoMessageMiddleware):
    pass


class CsrfViewMiddleware(_BackOfficeOnly, DjangoCsrfViewMiddleware):
    """Every API view is CSRF-exempt already (DRF's, and a JWT is no ambient credential)."""

    def process_view(self, request: HttpRequest, callback: Any, callback_args: Any, callback_kwargs: Any) -> Any:
        if is_api_request(request):
            return None
        return super().process_view(request, callback, callback_args, callback_kwargs)


class _LabelledOnce:
    """django-prometheus' ``label_metric``, with the child of each metric and set of label values
    kept after its first use: ``metric.labels()`` validates and builds its key on every call, ten
    times per request, 1 % of an API transfer's CPU. prometheus_client keeps every child it made
    anyway (``metric.labels`` returns the same one each time), so this keeps no more than it does."""

    _children: dict[tuple[Any, ...], Any] = {}

    def label_metric(self, metric: Any, request: Any, response: Any = None, **labels: Any) -> Any:
        if not labels:
            return metric
        key = (metric, *labels.items())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**labels)
        return child


class PrometheusBeforeMiddleware(_LabelledOnce, DjangoPrometheusBeforeMiddleware):
    pass


class PrometheusAfterMiddleware(_LabelledOnce, DjangoPrometheusAfterMiddleware):
    pass
