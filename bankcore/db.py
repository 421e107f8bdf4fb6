"""Running a unit of work in one ledger's transaction, retried on lock conflicts.

MySQL/MariaDB report a deadlock (1213) or a lock wait timeout (1205) by rolling back the statement
or the whole transaction; the only safe reaction is to run the whole outermost atomic block again.
Backoff is jittered and bounded so that a pile-up on a hot account spreads out instead of
re-colliding in lock step.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db import DatabaseError, OperationalError, connections, transaction

T = TypeVar("T")

RETRYABLE_MYSQL_ERRORS = {1205, 1213}
MAX_ATTEMPTS = 6
BASE_DELAY = 0.005
MAX_DELAY = 0.2


class LockConflictGaveUp(OperationalError):
    """Still deadlocking after ``MAX_ATTEMPTS``: the caller must abort, not half-finish."""


class CommitOutcomeUnknown(OperationalError):
    """The connection failed while ``COMMIT`` was on its way: the transaction may or may not have
    committed, and only the server can tell. Any other error inside ``server_transaction`` means it
    did not (the server rolls back a transaction whose client is gone), so a caller may treat that
    as a refusal; this one it must leave to recovery."""


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
            # A commit that may have happened is never run again.
            if isinstance(exc, CommitOutcomeUnknown) or not is_retryable(exc):
                raise
            if attempt == attempts - 1:
                raise LockConflictGaveUp(*exc.args) from exc
            time.sleep(random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2**attempt)))
    raise AssertionError("unreachable")


@dataclass(slots=True)
class _OpenTransaction:
    """A ``server_transaction`` in progress on one alias (per thread, as Django's connections)."""

    cursor: Any  # Django's MySQL CursorWrapper (error translation) over one raw MySQLdb cursor
    hooks: list[Callable[[], None]] = field(default_factory=list)


_local = threading.local()


def _open() -> dict[str, _OpenTransaction]:
    if not hasattr(_local, "by_alias"):
        _local.by_alias = {}
    return _local.by_alias  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Result:
    rowcount: int
    lastrowid: int | None
    rows: list[tuple[Any, ...]]


def execute(using: str, sql: str, params: Sequence[Any]) -> Result:
    """Run one statement of the engine's hot path (``transfers.ledger_sql``, the audit inserts) on
    ``using``; ``%s`` placeholders. Inside ``server_transaction`` it goes straight to the
    transaction's raw MySQLdb cursor, with Django's error translation (IntegrityError,
    OperationalError) but without Django's cursor layers: those cost ~50 µs of CPU per statement
    here, more than the statement's own client work (``bench/run.py``). Elsewhere (SQLite, a
    Django ``atomic`` block, autocommit) it is an ordinary Django cursor."""
    open_transaction = _open().get(using)
    connection = connections[using]
    if open_transaction is not None:
        cursor = open_transaction.cursor
        with connection.wrap_database_errors:
            cursor.execute(sql, params)
            rows = list(cursor.fetchall()) if cursor.description else []
        return Result(cursor.rowcount, cursor.lastrowid, rows)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = list(cursor.fetchall()) if cursor.description else []
        return Result(cursor.rowcount, cursor.lastrowid, rows)


def on_commit(using: str, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the current transaction on ``using`` commits: a ``server_transaction``
    (which Django does not see), else Django's own ``transaction.on_commit`` (an atomic block, or
    at once in autocommit mode). Dropped if the transaction rolls back."""
    open_transaction = _open().get(using)
    if open_transaction is not None:
        open_transaction.hooks.append(callback)
    else:
        transaction.on_commit(callback, using=using)


@contextmanager
def server_transaction(using: str) -> Iterator[None]:
    """``START TRANSACTION`` … ``COMMIT`` sent as such. Django's ``atomic()`` wraps every
    transaction in ``SET autocommit=0`` / ``SET autocommit=1``: two more round trips for each of
    the engine's ledger steps of 4–6 statements, a quarter of the statements the servers run for a
    cross-ledger transfer (``bench/run.py``). Django keeps believing the connection is in
    autocommit mode, so the work inside must not open atomic blocks on ``using`` (their commit
    would commit this transaction early), and must register after-commit work with this module's
    ``on_commit``, not Django's (which would run it at once); statements sent through ``execute``
    and plain ORM reads are fine. A connection that fails mid-way is closed, so that the next use
    reconnects instead of finding a dead socket."""
    connection = connections[using]
    if using in _open():
        raise RuntimeError(f"server_transaction({using!r}) does not nest")
    try:
        connection.ensure_connection()
        with connection.wrap_database_errors:
            raw = connection.connection.cursor()
            raw.execute("START TRANSACTION")
    except OperationalError:
        connection.close()
        raise
    from django.db.backends.mysql.base import CursorWrapper

    state = _open()[using] = _OpenTransaction(cursor=CursorWrapper(raw))
    try:
        try:
            yield
        except BaseException:
            try:
                with connection.wrap_database_errors:
                    raw.execute("ROLLBACK")
            except DatabaseError:
                connection.close()
            raise
        try:
            with connection.wrap_database_errors:
                connection.connection.commit()
        except DatabaseError as exc:
            # Committed or not, only the server knows; the caller treats it as "ledger unavailable"
            # and recovery settles the transfer from what the ledger holds.
            connection.close()
            raise CommitOutcomeUnknown(*exc.args) from exc
    finally:
        del _open()[using]
        raw.close()
    for callback in state.hooks:
        callback()
