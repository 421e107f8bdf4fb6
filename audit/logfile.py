"""The audit stream as a JSON-lines file (seed §12.1), for log shipping and for the auditors' tools.

One line per audit event (written when its transaction commits, so a rolled-back change never
appears) and one per mutating admin/API request (its body included, masked; never the response
body). Lines carry the request id, which ties a request to the events it caused. The file is opened
through a ``WatchedFileHandler`` so that logrotate may move it away under a running process.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from audit.masking import mask

logger = logging.getLogger("bankcore.audit.file")
logger.propagate = False
logger.setLevel(logging.INFO)

_lock = threading.Lock()
_handler_path: Path | None = None


def _ensure_handler() -> bool:
    """Point the logger at ``settings.AUDIT_LOG_FILE`` (re-pointed if the setting changed)."""
    global _handler_path
    if not settings.AUDIT_LOG_ENABLED:
        return False
    path = Path(settings.AUDIT_LOG_FILE)
    if path == _handler_path:
        return True
    with _lock:
        if path != _handler_path:
            for old in list(logger.handlers):
                logger.removeHandler(old)
                old.close()
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            _handler_path = path
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
