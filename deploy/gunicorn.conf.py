"""Gunicorn settings for bankcore (seed §11.2, corrected).

Used by the Docker image (`gunicorn -c deploy/gunicorn.conf.py bankcore.wsgi:application`) and by
native runs. Environment overrides, read through the project's strict readers: GUNICORN_BIND,
GUNICORN_WORKERS, GUNICORN_THREADS, GUNICORN_MAX_REQUESTS, GUNICORN_LOG_LEVEL (else LOG_LEVEL); and
PROMETHEUS_MULTIPROC_DIR (read by prometheus_client itself, so read here the same way).

Seed corrections: the seed used `worker_class = "gevent"` with 1000 connections per worker.
mysqlclient is a C driver that blocks the whole process (gevent cannot patch it), so one slow
query would stall every greenlet of that worker; threads release the GIL while mysqlclient waits.
The seed's `keepalive = 2` is shorter than nginx's upstream keep-alive reuse; 5 s is used.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from gunicorn import glogging

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter
    from gunicorn.config import Config
    from gunicorn.workers.base import Worker


def _project_module(relative_path: str, name: str) -> ModuleType:
    """A module of the project loaded from its file: importing the ``bankcore`` package would
    load the Celery app into the master and set a default DJANGO_SETTINGS_MODULE before wsgi.py
    sets the production one."""
    path = Path(__file__).resolve().parent.parent / relative_path
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# The project's strict readers (bankcore/env.py): a malformed value stops gunicorn with
# ImproperlyConfigured naming the variable, and every variable may be given as NAME_FILE.
# bankcore/logging.py imports bankcore.masking (a module without Django): the project root must be
# importable even for a gunicorn started elsewhere (gunicorn itself only adds its working
# directory, /app in the image).
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
_env = _project_module("bankcore/env.py", "_bankcore_env")
# The audit file's masking of account numbers (bankcore/masking.py needs no Django), for access lines.
_mask_text = _project_module("bankcore/masking.py", "_bankcore_masking").mask_text


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours cpusets (docker --cpuset-cpus)
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# Loopback unless configured: a native run is not reachable from the network by default. The
# image sets GUNICORN_BIND=0.0.0.0:8000 (Dockerfile), where the compose network and nginx stand
# in front.
bind = _env.env_str("GUNICORN_BIND", "127.0.0.1:8000")
# Containers see the host's CPU count; set GUNICORN_WORKERS when a CPU limit applies
# (docker-compose.scale.yml does). Each thread holds one connection per database alias.
workers = _env.env_int("GUNICORN_WORKERS", 2 * _cpus() + 1, minimum=1)
worker_class = "gthread"
threads = _env.env_int("GUNICORN_THREADS", 4, minimum=1)
keepalive = 5
timeout = 30
# On SIGTERM (rolling update, `docker compose stop`) workers stop accepting and get this long to
# finish in-flight requests; compose's stop_grace_period for banking-app is longer than this.
graceful_timeout = 30
# A worker is replaced after this many requests (a guard against slow leaks). Each replacement
# imports the app again and opens new database connections, so it is kept rare under full load
# (docs/performance.md).
max_requests = _env.env_int("GUNICORN_MAX_REQUESTS", 20000, minimum=0)
max_requests_jitter = max_requests // 10
# Heartbeat files in memory: a container's overlay filesystem can stall and get workers killed.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Each worker opens its own database connections after the fork.
preload_app = False

# --- Logging: JSON lines on stdout (access) and stderr (errors) --------------------------------
accesslog = "-"
errorlog = "-"
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_log_level_variable = "GUNICORN_LOG_LEVEL" if _env.env_optional("GUNICORN_LOG_LEVEL") else "LOG_LEVEL"
_log_level = _env.env_str(_log_level_variable, "info")
loglevel = _log_level.strip().lower()
if loglevel not in _LOG_LEVELS:  # gunicorn itself would log at INFO without a word
    raise _env.ImproperlyConfigured(
        f"{_log_level_variable}={_log_level!r} is not one of {', '.join(level.upper() for level in _LOG_LEVELS)}"
    )
# One JSON object per request, with the app's log-line fields first (time, level, logger,
# message, request_id). The request id is the one the app answered with in X-Request-ID (nginx's,
# or one it made up for a request that came without, such as a health check or a Prometheus scrape
# straight to gunicorn), so these lines join the app's log lines and audit events. remote_addr is
# the client as nginx saw it; peer is the direct TCP peer (nginx). Values are JSON-escaped by
# JsonSafeAtoms below.
access_log_format = (
    '{"time": "%(t)s", "level": "INFO", "logger": "gunicorn.access", "message": "%(m)s %(U)s %(s)s", '
    '"request_id": "%({x-request-id}o)s", "method": "%(m)s", '
    '"path": "%(U)s", "query": "%(q)s", "status": %(s)s, "duration": %(L)s, '
    '"bytes": "%(b)s", "remote_addr": "%({x-real-ip}i)s", "peer": "%(h)s", '
    '"user_agent": "%(a)s"}'
)


class JsonSafeAtoms(glogging.SafeAtoms):
    """Gunicorn's atoms, escaped for JSON strings (gunicorn only escapes double quotes, so a
    backslash or control character in a path would break the line), with `t` as ISO 8601 UTC."""

    # What a client typed into the URL (a path, a query string, the request line, the referer)
    # may carry account numbers; they keep their last 4 digits, as in the audit file.
    MASKED = frozenset({"U", "q", "r", "f"})

    def __init__(self, atoms: dict[str, Any]) -> None:
        # Kept as they are; __getitem__ escapes (and masks) only what the format reads, a dozen of
        # the atoms and request and response headers gunicorn hands over.
        dict.__init__(self, atoms)
        now = datetime.datetime.now(datetime.UTC)
        self["t"] = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        # A response gunicorn made itself (the app never saw the request) carries no id: the one
        # nginx sent, if any, still ties the line to nginx's.
        if "{x-request-id}o" not in self and "{x-request-id}i" in self:
            self["{x-request-id}o"] = self["{x-request-id}i"]

    def __getitem__(self, key: str) -> object:
        value = super().__getitem__(key)  # gunicorn's lookup: headers by lower-case name, "-" if absent
        if isinstance(value, str):
            if key in self.MASKED:
                value = _mask_text(value)
            value = json.dumps(value)[1:-1]
        return value


def _json_formatter() -> logging.Formatter:
    """The app's JSON formatter (bankcore/logging.py)."""
    return _project_module("bankcore/logging.py", "_bankcore_json_logging").JsonFormatter()


class JsonAccessLogger(glogging.Logger):
    """Access lines in the JSON form above; gunicorn's own (error log) lines as JSON too."""

    atoms_wrapper_class = JsonSafeAtoms

    def setup(self, cfg: Config) -> None:
        super().setup(cfg)
        formatter = _json_formatter()
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter)


logger_class = JsonAccessLogger


# --- Prometheus multiprocess mode (only when PROMETHEUS_MULTIPROC_DIR is set) --------------------
# With several workers each process has its own counters; prometheus_client's multiprocess mode
# (which the /metrics view of bankcore.metrics reads) aggregates them through files in this dir.
def on_starting(server: Arbiter) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)  # stale files from a previous master
        os.makedirs(directory, exist_ok=True)


def child_exit(server: Arbiter, worker: Worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        try:
            from prometheus_client import multiprocess
        except ImportError:  # pragma: no cover
            return
        multiprocess.mark_process_dead(worker.pid)
