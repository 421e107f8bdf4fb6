"""Settings for the test suite. The servers themselves are started by ``bankcore.testing.plugin``
before these are read, and reached through the same DB1_… variables as production."""

from bankcore.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
BANKCORE_FAULT_POINTS_ENABLED = True
BANKCORE_ENVIRONMENT = "test"
