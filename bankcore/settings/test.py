"""Settings for the test suite. The servers themselves are started by ``bankcore.testing.plugin``
before these are read, and reached through the same DB1_… variables as production."""

from bankcore.settings.common import *  # noqa: F403

# MD5 keeps the suite fast; PBKDF2 is there for users that a production-settings server started by
# a test (the native stack) must authenticate.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
BANKCORE_FAULT_POINTS_ENABLED = True
BANKCORE_ENVIRONMENT = "test"
