"""Logging and metrics settings (seed §8, corrected).

Logs: one JSON object per line (``bankcore.logging.JsonFormatter``: time, level, logger, message,
request_id, exc_info) to stdout, where ``docker compose logs`` collects them, and to a rotating
file ``LOG_DIR/banking.log`` (10 MB × 5, as the seed). The seed's plain RotatingFileHandler breaks
when several processes share the file (gunicorn workers, Celery, replicas on one volume); the
handler used here locks around every write and rotation.

Metrics: ``/metrics`` (``bankcore.metrics.metrics_view``) and django-prometheus' request metrics;
``PROMETHEUS_MULTIPROC_DIR`` (read by prometheus_client itself) turns on multiprocess mode.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from bankcore.env import env_bool, env_int, env_networks, env_optional, env_str

# Applied after base (bankcore.settings.common), whose ALLOWED_HOSTS this one may extend.
from bankcore.settings.base import ALLOWED_HOSTS as _ALLOWED_HOSTS
from bankcore.settings.base import VAR_DIR

LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(f"LOG_LEVEL={LOG_LEVEL!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
LOG_DIR = Path(env_optional("LOG_DIR") or VAR_DIR / "logs")
# The rotation of banking.log and of the audit file (AUDIT_LOG_FILE) alike; 0: leave it to logrotate.
LOG_FILE_MAX_BYTES = env_int("LOG_FILE_MAX_BYTES", 10 * 1024 * 1024, minimum=0)
LOG_FILE_BACKUP_COUNT = env_int("LOG_FILE_BACKUP_COUNT", 5, minimum=0)

LOGGING: dict[str, Any] = {  # logging.config.dictConfig's schema
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "bankcore.logging.RequestIdFilter"}},
    "formatters": {"json": {"()": "bankcore.logging.JsonFormatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
            "filters": ["request_id"],
        },
        "file": {
            "class": "bankcore.logging.ProcessSafeRotatingFileHandler",
            "filename": str(LOG_DIR / "banking.log"),
            "maxBytes": LOG_FILE_MAX_BYTES,
            "backupCount": LOG_FILE_BACKUP_COUNT,
            "formatter": "json",
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["stdout", "file"], "level": LOG_LEVEL},
    # Django's defaults send these to handlers of their own (plain text, DEBUG-only console);
    # here they propagate to the root handlers like everything else.
    "loggers": {
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.server": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "celery": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
    },
}

# Celery would replace the root logger's handlers with its own plain-text ones.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Port of the Celery worker's own /metrics (bankcore.celery); 0 turns it off.
CELERY_METRICS_PORT = env_int("CELERY_METRICS_PORT", 9808, minimum=0, maximum=65535)
# Its listen address: loopback unless configured. The image sets 0.0.0.0 (Prometheus reaches it
# over the compose network, which publishes nothing).
CELERY_METRICS_ADDR = env_str("CELERY_METRICS_ADDR", "127.0.0.1")
# Who may read the app's /metrics (bankcore.metrics.metrics_view): a client (as client_ip sees it)
# in METRICS_ALLOWED_NETWORKS, or one sending "Authorization: Bearer <METRICS_TOKEN>" when a token
# is set (Prometheus: authorization.credentials_file). Anyone else gets a 404.
METRICS_ALLOWED_NETWORKS: list[str] = env_networks("METRICS_ALLOWED_NETWORKS", ["127.0.0.1/32", "::1/128"])
METRICS_TOKEN = env_optional("METRICS_TOKEN") or ""
# Where /metrics reads the audit chain's last verification from: a callable returning True, False
# or None (never verified). Provided by the audit app; while it is not, bankcore_audit_chain_ok
# is left out (and the alert on it stays silent) but bankcore_audit_events_unsealed is exported.
BANKCORE_AUDIT_CHAIN_STATUS = "audit.chain.audit_chain_status"


def own_addresses(hostname: str | None = None) -> list[str]:
    """The IPv4 addresses this host's name resolves to (in a container: the container's own)."""
    try:
        return sorted(set(socket.gethostbyname_ex(hostname or socket.gethostname())[2]))
    except OSError:
        return []


# Prometheus scrapes every banking-app replica at its own address (dns_sd_configs in
# deploy/prometheus/prometheus.yml), so the Host header of a scrape is the replica's IP, which
# Django would refuse (400). docker-compose.yml turns this on for banking-app.
ALLOWED_HOSTS_OWN_ADDRESSES = env_bool("ALLOWED_HOSTS_OWN_ADDRESSES", False)
if ALLOWED_HOSTS_OWN_ADDRESSES:
    ALLOWED_HOSTS = [*_ALLOWED_HOSTS, *(a for a in own_addresses() if a not in _ALLOWED_HOSTS)]
