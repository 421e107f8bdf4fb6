"""Log lines as JSON objects, each carrying the id of the request (or Celery task) it belongs to.

The request id lives in a context variable: ``RequestIdMiddleware`` sets it for the duration of a
request (the same value the audit events of the request store), the Celery app sets a fresh one
for every task, and ``RequestIdFilter`` copies it onto every log record, so one id finds a
request's nginx line, gunicorn access line, app log lines and audit events.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import fcntl
import json
import logging
import os
import traceback
from collections.abc import Iterator
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any, TextIO

# No Django in it: gunicorn's config loads this module on its own (deploy/gunicorn.conf.py).
from bankcore.masking import mask, mask_text

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("bankcore_request_id", default="")


def current_request_id() -> str:
    """The id of the request or task being handled ("" outside of one)."""
    return _request_id.get()


@contextlib.contextmanager
def request_id_bound(request_id: str) -> Iterator[None]:
    """Make ``request_id`` the current one for the duration of the block."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


def bind_request_id(request_id: str) -> contextvars.Token[str]:
    """Set the current request id until ``unbind_request_id(token)`` (for signal pairs such as
    Celery's task_prerun/task_postrun, where a ``with`` block cannot span both)."""
    return _request_id.set(request_id)


def unbind_request_id(token: contextvars.Token[str]) -> None:
    try:
        _request_id.reset(token)
    except ValueError:  # set in another context (a different thread ran the pair): just clear
        _request_id.set("")


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current request's, or "") unless the record has one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = _request_id.get()
        return True


# Attributes every LogRecord has; anything else was passed with ``extra=`` and is kept.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime", "request_id"}
)


def _masked(value: object) -> object:
    """A log line's field with account numbers down to their last 4 digits (``bankcore.masking``, as
    in the audit file): Django's own lines carry request paths and reprs. Numbers stay numbers."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (dict, list, tuple)):
        return mask(value)
    return mask_text(value if isinstance(value, str) else str(value))


def json_line(value: object, **options: Any) -> str:
    """``json.dumps`` for a line of a UTF-8 log file: non-ASCII text kept as it is, except a lone
    surrogate, which UTF-8 cannot hold (a JSON body's ``"\\ud800"`` makes one): it is written as
    that same JSON escape. Unescaped, it made writing the line fail, and the line was lost."""
    text = json.dumps(value, ensure_ascii=False, default=str, **options)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # json.dumps writes non-ASCII only inside strings, where \uXXXX is the JSON escape.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, request_id, then
    any ``extra=`` fields, and exc_info (the formatted traceback) when there is one. Account
    numbers in any of them keep their last 4 digits only."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_text(record.getMessage()),
            "request_id": getattr(record, "request_id", "") or _request_id.get(),
            "process": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_") and key not in line:
                line[key] = _masked(value)
        if record.exc_info:
            line["exc_info"] = mask_text("".join(traceback.format_exception(*record.exc_info)).rstrip())
        elif record.exc_text:
            line["exc_info"] = mask_text(record.exc_text)
        if record.stack_info:
            line["stack_info"] = mask_text(record.stack_info)
        return json_line(line)


class ProcessSafeRotatingFileHandler(RotatingFileHandler):
    """A ``RotatingFileHandler`` that several processes may share (gunicorn workers, Celery
    worker and beat, replicas writing to one volume): the plain one rotates per process, so two
    processes rename the file under each other and lines land in a rotated file or are lost.

    Every write holds an exclusive ``flock`` on ``<file>.lock``; under it the handler reopens the
    file if another process rotated it, and decides to rotate on the file's real size.

    With ``backupCount=0`` (no old copy kept) a rollover empties the file in place. The stdlib's
    handler then reopens the full file and keeps appending, so the file grows without bound and is
    "rolled over" (closed and reopened) before every line."""

    def __init__(self, filename: str | os.PathLike[str], maxBytes: int = 0, backupCount: int = 0) -> None:
        Path(filename).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(filename, mode="a", maxBytes=maxBytes, backupCount=backupCount, encoding="utf-8", delay=True)
        self._lock_path = self.baseFilename + ".lock"
        self._lock: TextIO | None = None
        self._lock_pid = 0
        self._size: int | None = None  # the file's size as _reopen_if_rotated found it, under the lock

    def _interprocess_lock(self) -> TextIO:
        # flock belongs to the open file, which fork() shares with the parent: one per process.
        if self._lock is None or self._lock_pid != os.getpid():
            self._lock = open(self._lock_path, "a")
            self._lock_pid = os.getpid()
        return self._lock

    def _reopen_if_rotated(self) -> None:
        """Close the stream if the file was rotated or removed by another process; remember the
        file's size for ``shouldRollover`` (one ``stat`` per line, not two)."""
        try:
            current: os.stat_result | None = os.stat(self.baseFilename)
        except FileNotFoundError:
            current = None
        self._size = current.st_size if current is not None else None
        if self.stream is None:
            return
        opened = os.fstat(self.stream.fileno())
        if current is None or (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
            self.stream.close()
            self.stream = None  # type: ignore[assignment]  # as FileHandler.close does (typeshed: never None)

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        return self._rollover_due(len(self.format(record).encode("utf-8")) + 1)

    def _rollover_due(self, line_bytes: int) -> bool:
        if self.maxBytes <= 0:
            return False
        size = self._size
        if size is None:
            try:
                size = os.stat(self.baseFilename).st_size
            except FileNotFoundError:
                return False
        return size > 0 and size + line_bytes > self.maxBytes

    def doRollover(self) -> None:
        if self.backupCount > 0:
            super().doRollover()
            return
        if self.stream:
            self.stream.close()
            self.stream = None  # type: ignore[assignment]  # as FileHandler.close does (typeshed: never None)
        # Truncated, not replaced: every process appends (O_APPEND), so each one's next line lands at
        # the new end without reopening.
        os.truncate(self.baseFilename, 0)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except Exception:
            self.handleError(record)

    def write_line(self, text: str) -> None:
        """Append ``text`` and a newline, rotating first if it would pass ``maxBytes``; raises if
        the write fails. ``emit`` for a record; the audit file calls it directly with its finished
        JSON line, which skips a logger's frame walk, record and filters (a fifth of a line's CPU,
        twice per API transfer)."""
        data = text + self.terminator
        self.acquire()  # threads share the stream (Handler.handle takes this lock for emit too)
        try:
            lock = self._interprocess_lock()
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._reopen_if_rotated()
                rollover = self._rollover_due(len(data.encode("utf-8")))
                self._size = None  # read afresh under the next line's lock
                if rollover:
                    self.doRollover()
                if self.stream is None:
                    self.stream = self._open()
                self.stream.write(data)
                self.stream.flush()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        finally:
            self.release()

    def close(self) -> None:
        if self._lock is not None and self._lock_pid == os.getpid():
            self._lock.close()
        self._lock = None
        super().close()
