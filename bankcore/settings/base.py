"""Settings shared by every environment, before the topic modules (``bankcore.settings.common``
adds them). Everything that differs between deployments comes from the environment through the
strict readers in ``bankcore.env`` (see ``.env.example``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from bankcore.env import (
    MySQLServer,
    env_bool,
    env_decimal,
    env_int,
    env_list,
    env_names_set,
    env_networks,
    env_optional,
    env_str,
    mysql_server,
    mysql_tls_options,
    redis_tls_options,
)
from bankcore.money import InvalidCurrency, currency_parse

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR: Path = Path(env_str("BANKCORE_VAR_DIR", str(BASE_DIR / "var")))


# Overridden (and refused when left at this value) in production settings.
INSECURE_DEFAULT_SECRET = "insecure-development-secret-do-not-use-in-production-0123456789"
SECRET_KEY = env_str("SECRET_KEY", INSECURE_DEFAULT_SECRET)
JWT_SECRET_KEY: str = env_str("JWT_SECRET_KEY", INSECURE_DEFAULT_SECRET + "-jwt")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS: list[str] = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
# Peers whose X-Real-IP / X-Forwarded-For name the client (bankcore.actors.client_ip): the reverse
# proxy's addresses or networks. From any other peer those headers are ignored.
TRUSTED_PROXIES: list[str] = env_networks("TRUSTED_PROXIES", ["127.0.0.1/32", "::1/128"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
BANKCORE_ENVIRONMENT = env_str("BANKCORE_ENVIRONMENT", "development")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt",
    # Refresh tokens used once and revocable (bankcore.api.authentication); its tables live in `default`.
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "auditlog",
    "axes",
    # Its documented set-up: the middleware below and the app (its AppConfig starts the exports
    # that settings ask for; it has no models or migrations).
    "django_prometheus",
    # The back office's shared pages and template tags; before the apps whose admin builds on it.
    "backoffice",
    "accounts",
    "transfers",
    "audit",
]

MIDDLEWARE = [
    # django-prometheus': outermost and innermost, so it times the whole stack.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "bankcore.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Session, CSRF, authentication and messages: Django's, for the back office only (not /api/).
    "bankcore.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",  # also Content-Length, for the API too
    "bankcore.middleware.CsrfViewMiddleware",
    "bankcore.middleware.AuthenticationMiddleware",
    "bankcore.middleware.AdminLookupGuardMiddleware",  # a lookup the database cannot take: 400, not a 500
    "auditlog.middleware.AuditlogMiddleware",
    "audit.middleware.AuditRequestMiddleware",
    "bankcore.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
    # Last, as django-axes requires: turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

# Lockout first (it only watches HTTP logins, see audit.backends), then the ordinary user check.
AUTHENTICATION_BACKENDS = [
    "audit.backends.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "bankcore.urls"
WSGI_APPLICATION = "bankcore.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Databases: the control plane (`default`) and one alias per ledger -------------------------
#
# DB1_HOST unset: the embedded default, one SQLite file per ledger (SQLITE_LEDGERS of them, two by
# default) plus one for the control plane. DB1_HOST set: every ledger is a MySQL/MariaDB server,
# DB1_…, DB2_…, DB3_… for as many as are configured (numbering must be contiguous), and `default`
# is the database DB_DEFAULT_NAME on DB1's server unless DB_DEFAULT_HOST etc. say otherwise.
# Never point two aliases at one database: Django records migrations per database.

CONN_MAX_AGE = env_int("CONN_MAX_AGE", 300, minimum=0)
MYSQL_LOCK_WAIT_TIMEOUT = env_int("MYSQL_LOCK_WAIT_TIMEOUT", 5, minimum=1)
LEDGER_PREFIX = "db"


def _mysql_database(server: MySQLServer, prefix: str) -> dict[str, Any]:
    # TLS to the server, when DB_SSL_… / {prefix}_SSL_… ask for it (docs/operations.md "TLS inside").
    tls = mysql_tls_options(prefix)
    return {
        "ENGINE": "bankcore.mysql_backend",
        "HOST": server.host,
        "PORT": str(server.port),
        "NAME": server.name,
        "USER": server.user,
        "PASSWORD": server.password,
        "CONN_MAX_AGE": CONN_MAX_AGE,
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            "charset": "utf8mb4",
            "isolation_level": "read committed",
            # Strict mode makes the server refuse (not truncate) a value that does not fit; a
            # short lock wait turns a hot-account pile-up into a retryable 1205 quickly.
            "init_command": (
                "SET sql_mode='STRICT_TRANS_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,"
                "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', "
                f"innodb_lock_wait_timeout={MYSQL_LOCK_WAIT_TIMEOUT}"
            ),
            "connect_timeout": env_int("MYSQL_CONNECT_TIMEOUT", 5, minimum=1),
            **tls,
        },
        "TEST": {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
    }


def _sqlite_database(path: Path) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        # SQLite serialises writers; wait instead of failing with "database is locked".
        "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
    }


DATABASES: dict[str, dict[str, Any]] = {}
LEDGERS: dict[str, str] = {}  # alias -> two-digit ledger code carried in account numbers

if env_optional("DB1_HOST"):
    _first = mysql_server("DB1", default_name="bank_source")
    _ledger_names = {1: "bank_source", 2: "bank_dest"}
    _n = 1
    while _n == 1 or env_optional(f"DB{_n}_HOST"):
        _server = _first if _n == 1 else mysql_server(f"DB{_n}", default_name=_ledger_names.get(_n, f"bank_ledger{_n}"))
        DATABASES[f"{LEDGER_PREFIX}{_n}"] = _mysql_database(_server, f"DB{_n}")
        LEDGERS[f"{LEDGER_PREFIX}{_n}"] = f"{_n:02d}"
        _n += 1
    _default = mysql_server("DB_DEFAULT", default_name="bank_core", fallback=_first)
    DATABASES = {"default": _mysql_database(_default, "DB_DEFAULT"), **DATABASES}
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"] = _sqlite_database(VAR_DIR / "core.sqlite3")
    for _n in range(1, env_int("SQLITE_LEDGERS", 2, minimum=1, maximum=99) + 1):
        DATABASES[f"{LEDGER_PREFIX}{_n}"] = _sqlite_database(VAR_DIR / f"ledger{_n}.sqlite3")
        LEDGERS[f"{LEDGER_PREFIX}{_n}"] = f"{_n:02d}"

# The migrator's user (DDL, GRANT OPTION): `manage.py migrate_ledgers` runs the migrations as it
# and then grants the application's user (DBn_USER, DB_DEFAULT_USER) exactly the DML it needs
# (bankcore.privileges). Unset: migrations run as the application's user (the embedded mode).
DB_MIGRATE_USER = env_optional("DB_MIGRATE_USER")
DB_MIGRATE_PASSWORD = env_str("DB_MIGRATE_PASSWORD", "")

# A ledger variable past the last DBn_HOST would be ignored: DB3_HOST with DB2_HOST unset (a gap),
# DB2_PORT without DB2_HOST, DB1_… in the embedded mode. A ledger that silently is not there, or
# SQLite where a server was meant, is worse than not starting.
_mysql_ledgers = len(LEDGERS) if env_optional("DB1_HOST") else 0
for _name in env_names_set(r"DB([1-9][0-9]*)_(HOST|PORT|NAME|USER|PASSWORD)"):
    _number = int(_name[2:].split("_", 1)[0])
    if _number > _mysql_ledgers:
        raise ImproperlyConfigured(
            f"{_name} is set but DB{_mysql_ledgers + 1}_HOST is not: ledgers are DB1_…, DB2_…, … numbered "
            "without gaps, each with its DBn_HOST"
            + ("; leave every DBn_… unset for the embedded SQLite ledgers" if not _mysql_ledgers else "")
        )

_names = [(db["HOST"] if "HOST" in db else "", db.get("PORT", ""), db["NAME"]) for db in DATABASES.values()]
if len(set(_names)) != len(_names):
    raise ImproperlyConfigured("two database aliases point at the same database; give each its own NAME")

DATABASE_ROUTERS = ["bankcore.router.LedgerRouter"]
# Models whose tables exist in every ledger (and only there). Everything else lives in `default`.
LEDGER_MODELS = {"accounts.account", "accounts.entry", "transfers.transferleg"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, throttling, sessions, Celery broker -----------------------------------------
REDIS_HOST = env_optional("REDIS_HOST")
REDIS_PORT = env_int("REDIS_PORT", 6379, minimum=1, maximum=65535)
REDIS_PASSWORD = env_optional("REDIS_PASSWORD")
REDIS_DB = env_int("REDIS_DB", 0, minimum=0, maximum=15)


# TLS to Redis (REDIS_TLS, REDIS_TLS_CA, …): a rediss:// URL, the certificate always verified.
REDIS_TLS_OPTIONS = redis_tls_options()


def _redis_url(db: int) -> str:
    auth = f":{REDIS_PASSWORD}@" if REDIS_PASSWORD else ""
    scheme = "rediss" if REDIS_TLS_OPTIONS else "redis"
    return f"{scheme}://{auth}{REDIS_HOST}:{REDIS_PORT}/{db}"


if REDIS_HOST:
    from redis.exceptions import ConnectionError as _RedisConnectionError

    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": _redis_url(REDIS_DB),
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
                # A pooled connection that a Redis restart left dead is retried once on a new one,
                # not failed: every command here (the throttle's count, sessions) may run twice.
                # With REDIS_TLS, the TLS options too.
                "CONNECTION_POOL_KWARGS": {"retry_on_error": [_RedisConnectionError], **(REDIS_TLS_OPTIONS or {})},
            },
        }
    }
    SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    # Redis down: a cache read answers "nothing there" and a write is dropped (logged), instead
    # of a 500. A back-office session then reads as none (the teller is sent to the login page);
    # the partner API keeps working (bankcore.api.throttling counts in-process meanwhile).
    # docs/operations.md, "When Redis is down".
    DJANGO_REDIS_IGNORE_EXCEPTIONS = True
    DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
    CELERY_BROKER_URL = _redis_url(REDIS_DB)
    CELERY_BROKER_USE_SSL = dict(REDIS_TLS_OPTIONS) if REDIS_TLS_OPTIONS else None
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CELERY_BROKER_URL = "memory://"

CELERY_TASK_ALWAYS_EAGER = not REDIS_HOST
CELERY_TIMEZONE = "Asia/Shanghai"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Redis restarting must not need a worker or beat restart: connect at start-up even if Redis comes
# up later, reconnect for as long as it takes, find a half-open socket by keepalive and a periodic
# PING instead of waiting on it forever. Database connections: Celery's Django fix-up closes
# every connection before and after each task, and the beat scheduler drops unusable ones before
# each tick (django_celery_beat's close_old_connections), so a restarted ledger server is reached
# again by the next task.
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": 2,
    "socket_timeout": 10,
    "socket_keepalive": True,
    "health_check_interval": 10,
    "retry_on_timeout": True,
}
RECOVERY_INTERVAL_SECONDS = env_int("RECOVERY_INTERVAL_SECONDS", 5, minimum=1)
RECONCILE_INTERVAL_SECONDS = env_int("RECONCILE_INTERVAL_SECONDS", 300, minimum=10)
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "recover-transfers": {
        "task": "transfers.tasks.recover_transfers",
        "schedule": float(RECOVERY_INTERVAL_SECONDS),
    },
    "reconcile-ledgers": {
        "task": "transfers.tasks.reconcile_ledgers",
        "schedule": float(RECONCILE_INTERVAL_SECONDS),
    },
    # Beat's liveness, exported on /metrics (bankcore.heartbeat).
    "beat-heartbeat": {
        "task": "bankcore.heartbeat.beat_heartbeat",
        "schedule": float(env_int("BEAT_HEARTBEAT_INTERVAL_SECONDS", 30, minimum=5)),
    },
}
# Task modules outside the installed apps' tasks.py.
CELERY_IMPORTS = ["bankcore.heartbeat"]

# --- Money rules (seed §5.1) -------------------------------------------------------------------
MAX_TRANSFER_AMOUNT = env_decimal("MAX_TRANSFER_AMOUNT", "50000.00")
DAILY_TRANSFER_LIMIT = env_decimal("DAILY_TRANSFER_LIMIT", "100000.00")
TRANSACTION_TIMEOUT = env_int("TRANSACTION_TIMEOUT", 30, minimum=1)
# Four eyes (transfers/approval_rules.py): a staff member's movement waits for a supervisor when it, or
# the maker's total from (or into) one account in the business day, passes APPROVAL_THRESHOLD, or
# the maker's total of the day over all accounts passes APPROVAL_MAKER_DAILY_THRESHOLD. A
# supervisor's own movements are held to SOLO_LIMIT instead of APPROVAL_THRESHOLD (default: the
# same), above which a second supervisor approves.
APPROVAL_THRESHOLD = env_decimal("APPROVAL_THRESHOLD", "10000.00")
APPROVAL_MAKER_DAILY_THRESHOLD = env_decimal("APPROVAL_MAKER_DAILY_THRESHOLD", "100000.00")
SOLO_LIMIT = env_decimal("SOLO_LIMIT", str(APPROVAL_THRESHOLD))
# How long a movement waiting for approval holds its amount; past it, the request expires and
# recovery releases the money.
APPROVAL_HOLD_SECONDS = env_int("APPROVAL_HOLD_SECONDS", 3 * 24 * 3600, minimum=60)
DEFAULT_CURRENCY = env_str("DEFAULT_CURRENCY", "CNY")
try:
    # The rule every account's currency is held to; a migration writes the cash account in this one.
    currency_parse(DEFAULT_CURRENCY)
except InvalidCurrency:
    raise ImproperlyConfigured(
        f"DEFAULT_CURRENCY={DEFAULT_CURRENCY!r} is not a three-letter ISO 4217 code in capitals, e.g. CNY"
    ) from None
BUSINESS_TIME_ZONE = "Asia/Shanghai"
# When a ledger is a database on the control plane's server (DB1 with the default topology), the
# engine writes the control plane and that ledger in one transaction: a cross-ledger transfer takes
# three commits instead of five (transfers/engine/home.py). Off: every step commits on its own, as
# with ledgers elsewhere; the tests use it to exercise that protocol on two servers.
BANKCORE_SHARED_COMMITS = env_bool("BANKCORE_SHARED_COMMITS", True)
# Group commit (transfers/group_commit.py): the transfers the doors make at the same time in one
# process share one batch's commits. A transfer waits up to GROUP_COMMIT_WAIT_MS for others, and
# only when another is in progress in its process; a batch closes early at GROUP_COMMIT_MAX_ITEMS.
GROUP_COMMIT = env_bool("GROUP_COMMIT", False)
GROUP_COMMIT_MAX_ITEMS = env_int("GROUP_COMMIT_MAX_ITEMS", 32, minimum=1, maximum=1000)
GROUP_COMMIT_WAIT_MS = env_int("GROUP_COMMIT_WAIT_MS", 2, minimum=0, maximum=100)
# Fault points kill a transfer between two protocol steps; only tests switch them on.
BANKCORE_FAULT_POINTS_ENABLED = env_bool("BANKCORE_FAULT_POINTS_ENABLED", False)

# --- Internationalisation ----------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "Asia/Shanghai"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
