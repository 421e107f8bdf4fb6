"""Running a unit of work in one ledger's transaction, retried on lock conflicts.

MySQL/MariaDB report a deadlock (1213) or a lock wait timeout (1205) by rolling back the statement
or the whole transaction; the only safe reaction is to run the whole outermost atomic block again.
Backoff is jittered and bounded so that a pile-up on a hot account spreads out instead of
re-colliding in lock step.
"""

from __future__ import annotations

import contextlib
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

# The years a date-time filter may name, at the API (``BoundedDateTimeField``) and in the admin
# (``bankcore.middleware.AdminLookupGuardMiddleware``): Django converts a bound from TIME_ZONE to UTC
# on its way to the database, which fails near year 1 or 9999 (year 1 at +08:00 is year 0 in UTC).
FILTER_YEARS = range(1900, 9001)


class LockConflictGaveUp(OperationalError):
    """Still deadlocking after ``MAX_ATTEMPTS``: the caller must abort, not half-finish."""


class CommitOutcomeUnknown(OperationalError):
    """The connection failed while ``COMMIT`` was on its way: the transaction may or may not have
    committed, and only the server can tell. Any other error inside ``server_transaction`` means it
    did not (the server rolls back a transaction whose client is gone), so a caller may treat that
    as a refusal; this one it must leave to recovery."""


# The client library's codes for a connection that could not be made or was lost: 2002/2003 cannot
# connect, 2006 server has gone away, 2013 lost during a query, 2055 lost at handshake; MySQL 8's
# 4031 is a connection the server closed for inactivity.
CONNECTION_LOST_ERRORS = {2002, 2003, 2006, 2013, 2055, 4031}


def connection_lost(exc: BaseException) -> bool:
    """The error says the connection to the server failed, not that a statement was refused."""
    code = exc.args[0] if exc.args else None
    return code in CONNECTION_LOST_ERRORS


def once_more_if_connection_lost(using: str, work: Callable[[], T]) -> T:
    """Run ``work`` — reads, or a whole transaction — on ``using``; if a connection opened before
    turns out lost (its server restarted since), close it and run ``work`` once more on a new one.
    Only for work that wrote nothing when it failed, as ``atomic_with_retry`` does for its
    transactions; a new connection that fails is not retried (the server is down)."""
    connection = connections[using]
    was_connected = connection.connection is not None
    try:
        return work()
    except OperationalError as exc:
        if not was_connected or not connection_lost(exc) or isinstance(exc, CommitOutcomeUnknown):
            raise
        _close_quietly(connection)
    return work()


def is_retryable(exc: BaseException) -> bool:
    code = exc.args[0] if exc.args else None
    if code in RETRYABLE_MYSQL_ERRORS:
        return True
    # SQLite (the embedded default) reports a busy database this way.
    return isinstance(code, str) and "database is locked" in code


def atomic_with_retry(
    using: str, work: Callable[[], T], *, join: Sequence[str] = (), attempts: int = MAX_ATTEMPTS
) -> T:
    """Run ``work`` in one transaction on ``using``, retrying the whole block on a deadlock or lock
    wait timeout. Must be the outermost transaction for ``using``; ``work`` must not open atomic
    blocks of its own on ``using`` (on MySQL it runs in ``server_transaction``). ``join``: aliases
    on the same server (``same_server``) whose statements go into this transaction too.

    A connection opened earlier that turns out lost (the server restarted since) is run again
    once, on a new connection: nothing of the block was committed (the server rolls back a
    transaction whose client is gone), unless the COMMIT itself was under way, which is
    ``CommitOutcomeUnknown`` and never run again. A new connection that fails is not retried:
    the server is down, and the caller says so."""
    connection = connections[using]
    for alias in (using, *join):
        if connections[alias].in_atomic_block:
            raise RuntimeError(f"atomic_with_retry({alias!r}) must not run inside an atomic block on the same database")
    if join and connection.vendor != "mysql":
        raise RuntimeError("only a MySQL/MariaDB transaction can join other aliases")

    def begin() -> contextlib.AbstractContextManager[None]:
        if connection.vendor == "mysql":
            return server_transaction(using, join=join)
        return transaction.atomic(using=using)

    reconnected = False
    for attempt in range(attempts):
        was_connected = connection.connection is not None
        try:
            with begin():
                return work()
        except OperationalError as exc:
            # A commit that may have happened is never run again.
            if isinstance(exc, CommitOutcomeUnknown):
                raise
            if was_connected and not reconnected and connection_lost(exc):
                reconnected = True
                _close_quietly(connection)
                continue
            if not is_retryable(exc):
                raise
            if attempt == attempts - 1:
                raise LockConflictGaveUp(*exc.args) from exc
            time.sleep(random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2**attempt)))
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class Result:
    rowcount: int
    lastrowid: int | None
    rows: list[tuple[Any, ...]]


Statement = tuple[str, Sequence[Any]]


@dataclass(slots=True)
class _OpenTransaction:
    """A ``server_transaction`` in progress on one alias (per thread, as Django's connections)."""

    connection: Any  # Django's DatabaseWrapper
    raw: Any  # one raw MySQLdb cursor for the whole transaction
    owner: str  # the alias whose connection runs it; joined aliases map to the same object
    databases: dict[str, str] = field(default_factory=dict)  # joined alias -> its database's name
    begun: bool = False  # START TRANSACTION has been sent
    deferred: list[tuple[str, Sequence[Any], Callable[[Result], None] | None]] = field(default_factory=list)
    hooks: list[Callable[[], None]] = field(default_factory=list)


_local = threading.local()


def _open() -> dict[str, _OpenTransaction]:
    if not hasattr(_local, "by_alias"):
        _local.by_alias = {}
    return _local.by_alias


def _is_client_error(exc: BaseException) -> bool:
    """Not an error the server reported about a statement (MySQL/MariaDB server errors are
    1000–1999 and 3000–4999; the client library's are 2000–2999, MariaDB Connector/C's also
    5000–5999): the connection itself failed, and what the server did with the last round trip is
    unknown. Anything unclassified counts as such, the cautious side. A server error leaves the
    transaction open (or, for a deadlock, rolled back), nothing after the failed statement run."""
    code = exc.args[0] if exc.args else None
    is_server_error = isinstance(code, int) and (1000 <= code < 2000 or 3000 <= code < 5000)
    return not is_server_error


def _send(state: _OpenTransaction, statements: Sequence[Statement] = (), *, commit: bool = False) -> list[Result]:
    """One round trip: START TRANSACTION the first time, then the deferred statements, then
    ``statements`` (whose results are returned), then COMMIT if asked, as one multi-statement
    query. The server runs them in order and stops at the first that fails, whose error is raised
    here: nothing after it ran, so a COMMIT in the batch did not happen — unless the connection
    itself failed, which makes a batch with COMMIT ``CommitOutcomeUnknown``."""
    parts: list[str] = []
    args: list[Any] = []
    callbacks: list[Callable[[Result], None] | None] = []
    if not state.begun:
        parts.append("START TRANSACTION")
        callbacks.append(None)
    for sql, params, callback in state.deferred:
        parts.append(sql)
        args.extend(params)
        callbacks.append(callback)
    state.deferred = []
    first_returned = len(parts)
    for sql, params in statements:
        parts.append(sql)
        args.extend(params)
        callbacks.append(None)
    if commit:
        parts.append("COMMIT")
        callbacks.append(None)
    if not parts:
        return []
    state.begun = True
    # Imported here: the embedded default (SQLite) runs without the MySQL driver installed.
    import MySQLdb
    from django.db.backends.mysql.base import CursorWrapper as MySQLCursorWrapper

    connection, raw = state.connection, state.raw
    results: list[Result] = []
    try:
        with connection.wrap_database_errors:
            try:
                query = "; ".join(parts).encode()
                raw.execute(query, args or None)
                while True:
                    results.append(Result(raw.rowcount, raw.lastrowid, list(raw.fetchall()) if raw.description else []))
                    if not raw.nextset():
                        break
                connection.mark_answered()
            except MySQLdb.OperationalError as exc:
                # As Django's MySQL cursor does: constraint failures the driver files elsewhere.
                if exc.args and exc.args[0] in MySQLCursorWrapper.codes_for_integrityerror:
                    raise MySQLdb.IntegrityError(*exc.args) from exc
                raise
    except DatabaseError as exc:
        if _is_client_error(exc):
            _close_quietly(connection)
            if commit:
                raise CommitOutcomeUnknown(*exc.args) from exc
        raise
    for callback, result in zip(callbacks, results, strict=True):
        if callback is not None:
            callback(result)
    return results[first_returned : first_returned + len(statements)]


def _close_quietly(connection: Any) -> None:
    try:
        connection.close()
    except DatabaseError:
        pass


def same_server(alias: str, other: str) -> bool:
    """True when two aliases are databases of one MySQL/MariaDB server reached as one user: then
    one transaction can write both (``server_transaction(join=…)``), atomically, with one commit.
    The designed topology puts the control plane (``default``) on the first ledger's server."""
    known = _same_server.get((alias, other))
    if known is None:
        a, b = connections[alias], connections[other]
        keys = ("HOST", "PORT", "USER")
        known = _same_server[(alias, other)] = (
            a.vendor == "mysql"
            and b.vendor == "mysql"
            and alias != other
            and all(str(a.settings_dict.get(k) or "") == str(b.settings_dict.get(k) or "") for k in keys)
        )
    return known


# Where the aliases' servers are does not change while a process runs (tests rename databases,
# not servers): decided once per pair.
_same_server: dict[tuple[str, str], bool] = {}


def table(using: str, name: str) -> str:
    """The name to write a table of ``using`` by in a statement: as is, or qualified with its
    database when ``using`` is joined into a transaction another alias runs."""
    state = _open().get(using)
    if state is None or state.owner == using:
        return name
    return f"`{state.databases[using]}`.`{name}`"


def batching(using: str) -> bool:
    """Whether statements for ``using`` go into a ``server_transaction``'s batches: then a write
    may be made conditional on what a statement before it in the same round trip found (a session
    variable), and the COMMIT can travel with it."""
    return using in _open()


def execute_all(using: str, statements: Sequence[Statement]) -> list[Result]:
    """Run statements of the engine's hot path (``transfers.ledger_sql``, the audit inserts) on
    ``using`` in order, ``%s`` placeholders, and return their results. Inside
    ``server_transaction`` they go in one round trip, with whatever was deferred before them, on
    the transaction's raw MySQLdb cursor (Django's error translation kept, its cursor layers
    skipped: they cost more CPU than the statement's own client work; docs/performance.md).
    Elsewhere (SQLite, a Django ``atomic`` block, autocommit) one Django cursor runs them."""
    state = _open().get(using)
    if state is not None:
        return _send(state, statements)
    results = []
    with connections[using].cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)
            results.append(
                Result(cursor.rowcount, cursor.lastrowid, list(cursor.fetchall()) if cursor.description else [])
            )
    return results


def execute(using: str, sql: str, params: Sequence[Any]) -> Result:
    """``execute_all`` of one statement."""
    return execute_all(using, [(sql, params)])[0]


def defer(using: str, sql: str, params: Sequence[Any], on_result: Callable[[Result], None] | None = None) -> None:
    """A write whose result the caller does not need before the commit: inside
    ``server_transaction`` it waits and goes with the next round trip (the next ``execute``, or the
    COMMIT itself), so a step of several writes costs one round trip. Its error, if any, is raised
    there, inside the transaction, which then rolls back as if it had been raised here.
    ``on_result`` gets its result when it ran (an inserted row's id). Elsewhere it runs at once."""
    state = _open().get(using)
    if state is not None:
        state.deferred.append((sql, params, on_result))
        return
    result = execute(using, sql, params)
    if on_result is not None:
        on_result(result)


def on_commit(using: str, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the current transaction on ``using`` commits: a ``server_transaction``
    (which Django does not see), else Django's own ``transaction.on_commit`` (an atomic block, or
    at once in autocommit mode). Dropped if the transaction rolls back."""
    state = _open().get(using)
    if state is not None:
        state.hooks.append(callback)
    else:
        transaction.on_commit(callback, using=using)


@contextmanager
def server_transaction(using: str, *, join: Sequence[str] = ()) -> Iterator[None]:
    """One transaction sent as ``START TRANSACTION`` … ``COMMIT``, in as few round trips as the
    work allows: statements go through ``execute_all``/``execute``/``defer``, START rides on the
    first round trip, deferred writes and the COMMIT on the last. A cross-ledger transfer is five
    transactions and nine round trips this way; through Django's ``atomic()`` and cursors it was
    about 37 (``SET autocommit`` pairs, one round trip per statement), and on this class of
    machine every round trip costs both processes a context switch and tens of µs of CPU
    (``bench/run.py``). Needs the connection's CLIENT.MULTI_STATEMENTS flag
    (``bankcore.mysql_backend``).

    Django keeps believing the connection is in autocommit mode, so the work inside must not open
    atomic blocks on ``using`` (their commit would commit this transaction early) and must register
    after-commit work with this module's ``on_commit``, not Django's (which would run it at once).
    An ORM query inside is fine: it first sends what is pending, so it runs inside the transaction
    and after the writes before it. A connection idle for a moment is pinged first
    (``ensure_usable_connection``); one that fails is closed, so that the next use reconnects
    instead of finding a dead socket, and Django's wrapper marks it (``errors_occurred``).

    ``join``: other aliases on the same server (``same_server``) whose statements run in this
    transaction, on this connection, their tables qualified with their database (``table``): one
    InnoDB transaction, one commit, for writes to several databases. The ORM must not query a
    joined alias inside (its own connection is outside the transaction): it raises
    ``RuntimeError``."""
    connection = connections[using]
    for alias in (using, *join):
        if alias in _open():
            raise RuntimeError(f"server_transaction({alias!r}) does not nest")
        if alias != using and not same_server(using, alias):
            raise RuntimeError(f"{alias!r} is not on {using!r}'s server: it cannot join its transaction")
    try:
        # A connection a restarted server left dead is replaced now, not found out by a batch
        # that may carry the COMMIT (its failure would be an unknown outcome).
        connection.ensure_usable_connection()  # type: ignore[attr-defined]  # bankcore.mysql_backend
        with connection.wrap_database_errors:
            raw = connection.connection.cursor()
        for alias in join:
            # What the joined alias's own connection knows of its server (version, hence native
            # UUIDs) is read once per process by a query of its own, which the guard below would
            # refuse inside the transaction: read it first.
            connections[alias].mysql_server_data  # type: ignore[attr-defined]  # noqa: B018  (MySQL backend)
    except OperationalError:
        _close_quietly(connection)
        raise
    state = _OpenTransaction(
        connection=connection,
        raw=raw,
        owner=using,
        databases={alias: connections[alias].settings_dict["NAME"] for alias in join},
    )
    for alias in (using, *join):
        _open()[alias] = state

    def send_pending_first(execute, sql, params, many, context):
        _send(state)
        return execute(sql, params, many, context)

    def refuse_outside(execute, sql, params, many, context):
        raise RuntimeError(f"a query on a joined alias would run outside {using!r}'s transaction: {sql[:80]}")

    try:
        with contextlib.ExitStack() as wrappers:
            wrappers.enter_context(connection.execute_wrapper(send_pending_first))
            for alias in join:
                wrappers.enter_context(connections[alias].execute_wrapper(refuse_outside))
            try:
                yield
                _send(state, commit=True)
            except BaseException as exc:
                if state.begun and connection.connection is not None and not isinstance(exc, CommitOutcomeUnknown):
                    try:
                        with connection.wrap_database_errors:
                            raw.execute("ROLLBACK")
                    except DatabaseError:
                        _close_quietly(connection)
                raise
    finally:
        for alias in (using, *join):
            del _open()[alias]
        try:
            raw.close()
        except Exception:  # the driver's own error, on a dead connection: nothing left to close
            pass
    for callback in state.hooks:
        callback()


@contextmanager
def named_lock(name: str, *, using: str = "default", timeout: int = 10) -> Iterator[bool]:
    """Hold the server-wide lock ``name`` (MySQL/MariaDB ``GET_LOCK``, at most 64 characters)
    for the block, on ``using``'s connection; yields whether it was taken within ``timeout``
    seconds. Unlike a row lock it lives outside transactions, so the block may run services that
    commit on their own. SQLite (the embedded development default) has none: yields True, and
    its single writer is the only serialisation."""
    connection = connections[using]
    if connection.vendor != "mysql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT GET_LOCK(%s, %s)", [name, timeout])
        taken = cursor.fetchone()[0] == 1
    try:
        yield taken
    finally:
        if taken:
            with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
                cursor.execute("SELECT RELEASE_LOCK(%s)", [name])
