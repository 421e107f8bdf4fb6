"""Teller back office settings (admin, roles, lockout, audit)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bankcore.env import env_bool, env_int, env_list, env_optional, env_str

# Applied after base (bankcore.settings.common), whose schedule this one extends.
from bankcore.settings.base import CELERY_BEAT_SCHEDULE as _BEAT_SCHEDULE
from bankcore.settings.base import INSECURE_DEFAULT_SECRET as _INSECURE_DEFAULT_SECRET
from bankcore.settings.base import VAR_DIR as _VAR_DIR

# Dates and times as the back office writes them: every time with its zone (bankcore/formats).
FORMAT_MODULE_PATH = ["bankcore.formats"]

# --- Admin sessions ----------------------------------------------------------------------------
# Sessions live in Redis when Redis is configured (SESSION_ENGINE in base). A teller's session ends
# with the browser and after a working day at most.
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600, minimum=60)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True

# --- Staff passwords ---------------------------------------------------------------------------
# Checked wherever a person chooses one (`create_staff`, the admin's password forms); partners'
# API passwords are generated (accounts.partners).
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Login lockout (django-axes) ---------------------------------------------------------------
# Locks a username from one address after AXES_FAILURE_LIMIT failed logins there, for
# AXES_COOLOFF_MINUTES (each attempt during the cool-off restarts it); the admin's login form and
# the API's token endpoint alike (audit.backends.LockoutBackend; the API answers 429
# login_locked with Retry-After). Locking the name from every address would let anyone who
# knows a partner's username lock it out of the API from anywhere; the price of the pair is
# that a guessing run spread over many addresses is slowed only per address (and by the
# token endpoint's throttle). Every attempt is an audit event (user.login_failed, with the
# address), and `axes_reset_username` lifts a lock early. The address is the one
# bankcore.actors.client_ip trusts (TRUSTED_PROXIES).
AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS: list[str | list[str]] = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "bankcore.actors.client_ip"
AXES_VERBOSE = False

# --- Audit trail -------------------------------------------------------------------------------
# The JSON-lines audit file (seed §12.1): every audit event and the body of every mutating admin or
# API request, with passwords dropped and account numbers and balances masked. It rotates like
# banking.log, at LOG_FILE_MAX_BYTES x LOG_FILE_BACKUP_COUNT (observability.py; audit.logfile).
_log_dir = env_optional("LOG_DIR")
AUDIT_LOG_FILE = Path(
    env_str("AUDIT_LOG_FILE", str(Path(_log_dir) / "audit.log" if _log_dir else _VAR_DIR / "audit.log"))
)
AUDIT_LOG_ENABLED = env_bool("AUDIT_LOG_ENABLED", True)
AUDIT_LOG_MAX_BODY_BYTES = env_int("AUDIT_LOG_MAX_BODY_BYTES", 64 * 1024, minimum=0)
# The key of the hash chain (HMAC-SHA256, audit.chain): without it, whoever can write to the
# database cannot rewrite a row and recompute the chain unseen. Keep it out of the database and its
# backups. The default is for development and tests only; the production settings refuse it.
AUDIT_CHAIN_KEY = env_str("AUDIT_CHAIN_KEY", _INSECURE_DEFAULT_SECRET + "-audit-chain")
# Earlier chain keys, comma-separated, kept to verify the rows they sealed: rows sealed with one key
# verify only with that key. A rotation moves the old key here and runs `rotate_audit_chain_key`.
AUDIT_CHAIN_RETIRED_KEYS = env_list("AUDIT_CHAIN_RETIRED_KEYS", [])
# The sealer hashes new audit rows into the chain every few seconds (Celery beat).
AUDIT_SEAL_INTERVAL_SECONDS = env_int("AUDIT_SEAL_INTERVAL_SECONDS", 10, minimum=1)
# A full verification re-reads the whole trail: hourly by default.
AUDIT_VERIFY_INTERVAL_SECONDS = env_int("AUDIT_VERIFY_INTERVAL_SECONDS", 3600, minimum=60)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    **_BEAT_SCHEDULE,
    "seal-audit-chain": {
        "task": "audit.tasks.seal_audit_chain",
        "schedule": float(AUDIT_SEAL_INTERVAL_SECONDS),
    },
    "verify-audit-chain": {
        "task": "audit.tasks.verify_audit_chain",
        "schedule": float(AUDIT_VERIFY_INTERVAL_SECONDS),
    },
}
# The callable /metrics asks for the last verification's outcome (True, False, or None: never run).
BANKCORE_AUDIT_CHAIN_STATUS = "audit.chain.audit_chain_status"

# django-auditlog: record who changed a registered model, never the password hash.
AUDITLOG_DISABLE_REMOTE_ADDR = False
