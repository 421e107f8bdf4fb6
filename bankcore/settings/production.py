"""Production: refuses to start with a default, empty, short or shared secret."""

from django.core.exceptions import ImproperlyConfigured

from bankcore.env import env_str
from bankcore.settings.common import *  # noqa: F403
from bankcore.settings.common import (
    AUDIT_CHAIN_KEY,
    AUDIT_CHAIN_RETIRED_KEYS,
    INSECURE_DEFAULT_SECRET,
    JWT_SECRET_KEY,
    SECRET_KEY,
)

for _name, _value in (
    ("SECRET_KEY", SECRET_KEY),
    ("JWT_SECRET_KEY", JWT_SECRET_KEY),
    ("AUDIT_CHAIN_KEY", AUDIT_CHAIN_KEY),
):
    if not _value or _value.startswith(INSECURE_DEFAULT_SECRET) or len(_value) < 32:
        raise ImproperlyConfigured(f"{_name} must be set to a random value of at least 32 characters")
# One key for both would let whoever learns it sign API tokens and sessions alike.
if JWT_SECRET_KEY == SECRET_KEY:
    raise ImproperlyConfigured("JWT_SECRET_KEY must differ from SECRET_KEY: give each its own random value")
# The chain key must not be one the web processes already hand to signing code (sessions, tokens).
if AUDIT_CHAIN_KEY in (SECRET_KEY, JWT_SECRET_KEY):
    raise ImproperlyConfigured(
        "AUDIT_CHAIN_KEY must differ from SECRET_KEY and JWT_SECRET_KEY: give each its own random value"
    )
# A retired key that is the current one means the rotation was not made (the new key not set).
if AUDIT_CHAIN_KEY in AUDIT_CHAIN_RETIRED_KEYS:
    raise ImproperlyConfigured(
        "AUDIT_CHAIN_RETIRED_KEYS holds AUDIT_CHAIN_KEY itself: a rotation sets a new AUDIT_CHAIN_KEY and retires the old one"
    )

DEBUG = False
# A staging deployment runs these settings too: it names itself, and its banner shows.
BANKCORE_ENVIRONMENT = env_str("BANKCORE_ENVIRONMENT", "production")
BANKCORE_FAULT_POINTS_ENABLED = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
