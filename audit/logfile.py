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

import logging
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils import timezone

from bankcore.logging import ProcessSafeRotatingFileHandler, json_line
from bankcore.masking import mask

_lock = threading.Lock()
_settings_read = False  # False: read the settings below again before the next line
_current: ProcessSafeRotatingFileHandler | None = None  # what the next line goes to (None: disabled)
_handler: ProcessSafeRotatingFileHandler | None = None  # the file's handler, kept while disabled
_handler_config: tuple[Path, int, int] | None = None
_SETTINGS = {"AUDIT_LOG_ENABLED", "AUDIT_LOG_FILE", "LOG_FILE_MAX_BYTES", "LOG_FILE_BACKUP_COUNT"}


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    global _settings_read
    if setting in _SETTINGS:
        _settings_read = False


def _current_handler() -> ProcessSafeRotatingFileHandler | None:
    """The handler of ``settings.AUDIT_LOG_FILE``, or None while the file is disabled. The settings
    are read once, and again after a test changes them (``setting_changed``): four lazy-settings
    lookups per line were a tenth of a line's CPU."""
    global _settings_read, _current, _handler, _handler_config
    if _settings_read:
        return _current
    with _lock:
        if not settings.AUDIT_LOG_ENABLED:
            handler = None
        else:
            config = (Path(settings.AUDIT_LOG_FILE), settings.LOG_FILE_MAX_BYTES, settings.LOG_FILE_BACKUP_COUNT)
            if config != _handler_config or _handler is None:
                if _handler is not None:
                    _handler.close()
                path, max_bytes, backup_count = config
                _handler = ProcessSafeRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backup_count)
                _handler_config = config
            handler = _handler
        _current = handler
        _settings_read = True
        return handler


def audit_log_write(record: dict[str, Any]) -> None:
    """Append one masked JSON line. Never raises: the file is a copy of the trail, whose record of
    truth is the database; a full disk must not stop a teller's transfer."""
    try:
        handler = _current_handler()
        if handler is None:
            return
        line = {"ts": timezone.now().isoformat(), **mask(record)}
        handler.write_line(json_line(line, sort_keys=True))
    except Exception:
        logging.getLogger(__name__).exception("could not write the audit log file")
