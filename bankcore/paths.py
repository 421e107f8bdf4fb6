"""Where the partner API lives, for what treats its requests apart: problem+json errors
(``bankcore.api.problems``), no session, CSRF, authentication or messages middleware
(``bankcore.middleware``), the API channel of a login's audit event (``audit.signals``), the
requests the audit file records (``audit.middleware``); and where the back office lives, for the
admin's year guard (``bankcore.middleware``) and the audit file.

No imports beyond Django's request type: the middleware module imports this before DRF's settings
can be read (``bankcore.api.problems`` is one of them)."""

from __future__ import annotations

from django.http import HttpRequest

API_PATH_PREFIX = "/api/"
# The back office (the Django admin, bankcore.urls).
ADMIN_PATH_PREFIX = "/admin/"


def is_api_request(request: HttpRequest) -> bool:
    return request.path.startswith(API_PATH_PREFIX)
