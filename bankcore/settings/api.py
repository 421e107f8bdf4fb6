"""Partner API settings (DRF, JWT, OpenAPI, throttling).

Applied after ``base`` (``bankcore.settings.common``): values come from the environment through
``bankcore.env`` directly; the one value taken from ``base`` is ``JWT_SECRET_KEY``.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured

from bankcore.env import env_int, env_str
from bankcore.settings.base import JWT_SECRET_KEY

_RATE = re.compile(r"^\d+/(s|sec|second|m|min|minute|h|hour|d|day)$")


def _env_rate(name: str, default: str) -> str:
    """A DRF throttle rate ("120/min"). Checked here: DRF would only fail on the first request."""
    value = env_str(name, default).strip()
    if not _RATE.match(value):
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate like 120/min (per s, min, hour or day)")
    return value


# The body of an API request, in bytes. DRF parses JSON from the stream and so bypasses Django's
# DATA_UPLOAD_MAX_MEMORY_SIZE; bankcore.api.parsers.LimitedJSONParser enforces this one (413).
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 64 * 1024, minimum=1024)
# The body of a batch of transfers (POST /api/v1/transfer-batches/, up to 1,000 items).
API_MAX_BATCH_BODY_BYTES = env_int("API_MAX_BATCH_BODY_BYTES", 1024 * 1024, minimum=1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["bankcore.api.authentication.PartnerJWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["bankcore.api.parsers.LimitedJSONParser"],
    # Every body ASCII, anything else as \u escapes (as Django's JsonResponse writes the problems
    # raised outside DRF): JSON defines no charset parameter, and a client that guesses one from
    # the bytes reads raw UTF-8 wrongly. Guessing Shift-JIS, the JSON text 'Í\"' (C3 8D 5C 22) reads
    # its escaping backslash into a character, leaving a bare quote: a deep schemathesis run found
    # that very body invalid.
    "UNICODE_JSON": False,
    "DEFAULT_THROTTLE_CLASSES": [
        "bankcore.api.throttling.AnonymousRateThrottle",
        "bankcore.api.throttling.PartnerRateThrottle",
    ],
    # Per client: an authenticated client by its user, an anonymous one by its address. Counted
    # in the default cache, which is Redis whenever REDIS_HOST is set, so every replica shares it.
    "DEFAULT_THROTTLE_RATES": {
        "anon": _env_rate("API_THROTTLE_ANON_RATE", "60/min"),
        "user": _env_rate("API_THROTTLE_USER_RATE", "600/min"),
        # Answers that an account does not exist (a transfer's destination), per partner: the
        # bank's account numbers are not to be walked (bankcore.api.throttling.NotFoundRateThrottle).
        "not_found": _env_rate("API_THROTTLE_NOT_FOUND_RATE", "30/hour"),
    },
    "EXCEPTION_HANDLER": "bankcore.api.problems.problem_response",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
}

SIMPLE_JWT = {
    # base's value, which production settings check (no default, not SECRET_KEY).
    "SIGNING_KEY": JWT_SECRET_KEY,
    "ALGORITHM": "HS256",
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_TOKEN_MINUTES", 5, minimum=1, maximum=60)),
    "REFRESH_TOKEN_LIFETIME": timedelta(hours=env_int("JWT_REFRESH_TOKEN_HOURS", 24, minimum=1, maximum=24 * 30)),
    "AUTH_HEADER_TYPES": ("Bearer",),
    # A password change (or deactivation) invalidates the tokens issued before it.
    "CHECK_REVOKE_TOKEN": True,
    "CHECK_USER_IS_ACTIVE": True,
    # Partners only: staff and superusers get no token, and a token of a user made staff since
    # is refused (bankcore.api.authentication).
    "USER_AUTHENTICATION_RULE": "audit.roles.may_use_partner_api",
    # A refresh token is used once: exchanged for a new pair and blacklisted (token_blacklist),
    # and POST auth/token/revoke/ blacklists one.
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    # simplejwt's, with an expiry no date can hold refused (bankcore.api.authentication).
    "AUTH_TOKEN_CLASSES": ("bankcore.api.authentication.PartnerAccessToken",),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "bankcore partner API",
    "DESCRIPTION": (
        "Accounts, statements and transfers for partner systems. Authenticate with a JWT from "
        "`POST /api/v1/auth/token/`. Amounts are decimal strings. Every error is "
        "`application/problem+json` (RFC 9457) with a stable machine `code`. A method that a path "
        "does not list is answered 405 `method_not_allowed` (`#/components/responses/MethodNotAllowed`), "
        "with `Allow` naming the methods it takes."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's own files from our static files (drf-spectacular-sidecar, collected with the
    # rest), not from a CDN: the docs work offline and wherever the CDN is blocked.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "AccountStatusEnum": "accounts.models.Account.Status",
        "AccountKindEnum": "accounts.models.Account.Kind",
        "TransferStatusEnum": "transfers.models.Transfer.Status",
        "TransferKindEnum": "transfers.models.Transfer.Kind",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "bankcore.api.schema.problem_schema_postprocess",
    ],
}
