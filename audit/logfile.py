"""The audit stream as a JSON-lines file (seed §12.1), for log shipping and for the auditors' tools.

One line per audit event (written when its transaction commits, so a rolled-back change never
appears) and one per mutating admin/API request (its body included, masked; never the response
body). Lines carry the request id, which ties a request to the events it caused.

The file rotates like banking.log, through the same handler (``bankcore.logging``'s
``ProcessSafeRotatingFileHandler``, which gunicorn workers, Celery and replicas can share) and the
same limits: at ``LOG_FILE_MAX_BYTES`` it becomes ``audit.log.1`` and the oldest beyond
``LOG_FILE_BACKUP_COUNT`` is removed (the record of truth is the database's audit trail; the file
is for shipping, which must keep up). ``LOG_FILE_MAX_BYTES=0`` leaves rotation to logrotate: the
handler reopens the file whenever it was moved away or replaced under a running process.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from audit.masking import mask
from bankcore.logging import ProcessSafeRotatingFileHandler

logger = logging.getLogger("bankcore.audit.file")
logger.propagate = False
logger.setLevel(logging.INFO)

_lock = threading.Lock()
_handler_config: tuple[Path, int, int] | None = None


def _ensure_handler() -> bool:
    """Point the logger at ``settings.AUDIT_LOG_FILE`` (re-pointed if the settings changed)."""
    global _handler_config
    if not settings.AUDIT_LOG_ENABLED:
        return False
    config = (Path(settings.AUDIT_LOG_FILE), settings.LOG_FILE_MAX_BYTES, settings.LOG_FILE_BACKUP_COUNT)
    if config == _handler_config:
        return True
    with _lock:
        if config != _handler_config:
            for old in list(logger.handlers):
                logger.removeHandler(old)
                old.close()
            path, max_bytes, backup_count = config
            handler = ProcessSafeRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backup_count)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            _handler_config = config
    return True


def audit_log_write(record: dict[str, Any]) -> None:
    """Append one masked JSON line. Never raises: the file is a copy of the trail, whose record of
    truth is the database; a full disk must not stop a teller's transfer."""
    try:
        if not _ensure_handler():
            return
        line = {"ts": timezone.now().isoformat(), **mask(record)}
        logger.info(json.dumps(line, ensure_ascii=False, sort_keys=True, default=str))
    except Exception:
        logging.getLogger(__name__).exception("could not write the audit log file")
