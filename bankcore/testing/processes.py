"""Child processes that run the application against the test databases: ``manage.py`` commands and
app servers on the production settings."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from django.conf import settings
from django.db import connections


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that must reach the *test* databases."""
    env = dict(os.environ)
    for alias in settings.LEDGERS:
        n = alias.removeprefix(settings.LEDGER_PREFIX)
        env[f"DB{n}_NAME"] = connections[alias].settings_dict["NAME"]
    env["DB_DEFAULT_NAME"] = connections["default"].settings_dict["NAME"]
    env["DJANGO_SETTINGS_MODULE"] = "bankcore.settings.test"
    env.update(extra)
    return env


def production_env(log_dir: object, **extra: str) -> dict[str, str]:
    """``subprocess_env`` for an app process on the production settings, with fresh secrets, served
    on loopback, logging under ``log_dir``."""
    production = {
        "DJANGO_SETTINGS_MODULE": "bankcore.settings.production",
        "SECRET_KEY": secrets.token_hex(32),
        "JWT_SECRET_KEY": secrets.token_hex(32),
        "AUDIT_CHAIN_KEY": secrets.token_hex(32),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_DIR": str(log_dir),
    }
    return subprocess_env(**{**production, **extra})


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        cwd=settings.BASE_DIR,
        timeout=120,
    )
