"""Running a unit of work in one ledger's transaction, retried on lock conflicts.

MySQL/MariaDB report a deadlock (1213) or a lock wait timeout (1205) by rolling back the statement
or the whole transaction; the only safe reaction is to run the whole outermost atomic block again.
Backoff is jittered and bounded so that a pile-up on a hot account spreads out instead of
re-colliding in lock step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connections, transaction

T = TypeVar("T")

RETRYABLE_MYSQL_ERRORS = {1205, 1213}
MAX_ATTEMPTS = 6
BASE_DELAY = 0.005
MAX_DELAY = 0.2


class LockConflictGaveUp(OperationalError):
    """Still deadlocking after ``MAX_ATTEMPTS``: the caller must abort, not half-finish."""


def is_retryable(exc: BaseException) -> bool:
    code = exc.args[0] if exc.args else None
    if code in RETRYABLE_MYSQL_ERRORS:
        return True
    # SQLite (the embedded default) reports a busy database this way.
    return isinstance(code, str) and "database is locked" in code


def atomic_with_retry(using: str, work: Callable[[], T], *, attempts: int = MAX_ATTEMPTS) -> T:
    """Run ``work`` inside ``transaction.atomic(using=using)``, retrying the whole block on a
    deadlock or lock wait timeout. Must be the outermost atomic block for ``using``."""
    if connections[using].in_atomic_block:
        raise RuntimeError(f"atomic_with_retry({using!r}) must not run inside an atomic block on the same database")
    for attempt in range(attempts):
        try:
            with transaction.atomic(using=using):
                return work()
        except OperationalError as exc:
            if not is_retryable(exc):
                raise
            if attempt == attempts - 1:
                raise LockConflictGaveUp(*exc.args) from exc
            time.sleep(random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2**attempt)))
    raise AssertionError("unreachable")
