"""Running a unit of work in one ledger's transaction, retried on lock conflicts.

MySQL/MariaDB report a deadlock (1213) or a lock wait timeout (1205) by rolling back the statement
or the whole transaction; the only safe reaction is to run the whole outermost atomic block again.
Backoff is jittered and bounded so that a pile-up on a hot account spreads out instead of
re-colliding in lock step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.db import DatabaseError, OperationalError, connections, transaction

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
    """Run ``work`` in one transaction on ``using``, retrying the whole block on a deadlock or lock
    wait timeout. Must be the outermost transaction for ``using``; ``work`` must not open atomic
    blocks of its own on ``using`` (on MySQL it runs in ``server_transaction``)."""
    connection = connections[using]
    if connection.in_atomic_block:
        raise RuntimeError(f"atomic_with_retry({using!r}) must not run inside an atomic block on the same database")
    begin = server_transaction if connection.vendor == "mysql" else transaction.atomic
    for attempt in range(attempts):
        try:
            with begin(using=using):
                return work()
        except OperationalError as exc:
            if not is_retryable(exc):
                raise
            if attempt == attempts - 1:
                raise LockConflictGaveUp(*exc.args) from exc
            time.sleep(random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2**attempt)))
    raise AssertionError("unreachable")


@contextmanager
def server_transaction(using: str) -> Iterator[None]:
    """``START TRANSACTION`` … ``COMMIT`` sent as such. Django's ``atomic()`` wraps every
    transaction in ``SET autocommit=0`` / ``SET autocommit=1``: two more round trips for each of
    the engine's ledger steps of 4–6 statements, a quarter of the statements the servers run for a
    cross-ledger transfer (``bench/run.py``). Django keeps believing the connection is in
    autocommit mode, so the work inside must not open atomic blocks on ``using`` (their commit
    would commit this transaction early); the engine's statements (``transfers.ledger_sql``) and
    plain ORM reads are fine. A connection that fails mid-way is closed, so that the next use
    reconnects instead of finding a dead socket."""
    connection = connections[using]
    try:
        with connection.cursor() as cursor:
            cursor.execute("START TRANSACTION")
    except OperationalError:
        connection.close()
        raise
    try:
        yield
    except BaseException:
        try:
            with connection.cursor() as cursor:
                cursor.execute("ROLLBACK")
        except DatabaseError:
            connection.close()
        raise
    try:
        with connection.wrap_database_errors:
            connection.connection.commit()
    except DatabaseError:
        # Committed or not, only the server knows; the caller treats it as "ledger unavailable"
        # and recovery settles the transfer from what the ledger holds.
        connection.close()
        raise
