"""The Celery app. Workers and beat run anywhere: all state lives in the databases and Redis.

Observability hooks (signals below): every task runs with a fresh request id (its task id) in
the log context, its outcome is counted in ``bankcore_celery_tasks_total``, and the worker serves
its counters on ``CELERY_METRICS_PORT`` (default 9808, 0 = off) for Prometheus.
"""

import os
import shutil
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bankcore.settings.development")

app = Celery("bankcore")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_task_tokens: dict[str, Any] = {}


@signals.setup_logging.connect
def _configure_logging(**_: Any) -> None:
    """Worker and beat log like the app (settings.LOGGING: JSON lines), not in Celery's format."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@signals.worker_init.connect
def _serve_worker_metrics(**_: Any) -> None:
    """In the main worker process, before the pool forks: a clean multiprocess directory (files
    of a previous run would be added to this one's counters), then the metrics endpoint."""
    from django.conf import settings

    from bankcore.metrics import worker_metrics_server

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)
    port = settings.CELERY_METRICS_PORT
    if port:
        worker_metrics_server(port, addr=settings.CELERY_METRICS_ADDR)


@signals.worker_process_shutdown.connect
def _pool_process_exit(pid: int | None = None, **_: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


@signals.task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    from bankcore.logging import bind_request_id

    if task_id:
        _task_tokens[task_id] = bind_request_id(task_id)


@signals.task_postrun.connect
def _task_finished(task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any) -> None:
    from bankcore.logging import unbind_request_id
    from bankcore.metrics import record_task

    if task is not None:
        record_task(task=task.name, state=(state or "UNKNOWN").lower())
    token = _task_tokens.pop(task_id or "", None)
    if token is not None:
        unbind_request_id(token)
