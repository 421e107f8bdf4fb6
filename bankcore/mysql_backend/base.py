"""Django's MySQL backend, with one fix for servers that die mid-query, multi-statement queries
on, and reconnects counted (``bankcore_db_reconnects_total``).

``bankcore.db.server_transaction`` sends a transaction's statements in as few round trips as it
can, as one multi-statement query each, which the client must ask for (CLIENT.MULTI_STATEMENTS).
Parameters are still escaped by the driver, one by one; nothing in the project puts two
statements in one string except ``bankcore.db``.

When a query fails because the server went away, Django's compiler closes the cursor before
re-raising; MySQLdb's ``cursor.close()`` then raises a *raw* ``MySQLdb.OperationalError`` (2006),
which is not a ``django.db.Error`` and replaces the wrapped error every caller expects. Seen in
the server-kill test. Closing a cursor on a dead connection has nothing left to clean up, so the
close error is dropped and the original (wrapped) error propagates.

Health checks (``CONN_HEALTH_CHECKS``): Django pings a persistent connection before its first query
of every request, a round trip that cost a tenth of the wall time of a partner API request under
load (py-spy, ``make bench-api``). A connection that ran a query less than
``HEALTH_CHECK_AFTER_IDLE`` seconds ago, without an error since, is not pinged: it was answering a
moment ago, and a server that went away in that moment is found by the query itself, as it would
be in the moment between a ping and the query. An error marks the connection, and Django's own
check at the end of the request closes it if it no longer answers. Idle connections, where a
server restart or a ``wait_timeout`` may have dropped them, are pinged as before. A connection
with an error since its last check is checked before its next query, wherever that is (not only
at a request's start): a failed connection is never used again.

``bankcore.db.server_transaction`` sends its transactions on the raw driver connection, past the
cursor where Django runs that check: it asks for the same check before each transaction
(``ensure_usable_connection``), so that a connection left dead by a server restart is replaced
before a batch that carries a COMMIT is sent on it (whose failure would be an unknown outcome).
"""

import time
from typing import Any

import MySQLdb
from django.db.backends.mysql import base
from MySQLdb.constants import CLIENT

from bankcore.metrics import record_reconnect


class CursorWrapper(base.CursorWrapper):
    def close(self) -> None:
        try:
            self.cursor.close()
        except MySQLdb.OperationalError:
            pass


HEALTH_CHECK_AFTER_IDLE = 1.0


class DatabaseWrapper(base.DatabaseWrapper):
    _used_at = float("-inf")
    _lost = False  # the last connection failed: the next one opened is a reconnect

    def connect(self) -> None:
        super().connect()
        if self._lost:
            self._lost = False
            record_reconnect(alias=self.alias)

    def is_usable(self) -> bool:
        usable: bool = super().is_usable()
        self._lost = self._lost or not usable
        return usable

    def close(self) -> None:
        # A connection closed after an error (by Django's request-boundary check, or by
        # bankcore.db on a lost connection) is replaced, not retired.
        self._lost = self._lost or (self.connection is not None and self.errors_occurred)
        super().close()

    def close_if_health_check_failed(self) -> None:
        if self.connection is not None and self.errors_occurred:
            # A query failed since the connection was last checked: it is checked before its next
            # use, inside a request or not (a thread, a loop), so a connection whose server went
            # away is never used again. A live one (a deadlock was the error) costs one ping.
            if self.is_usable():
                self.errors_occurred = False
            else:
                self.close()
            self.health_check_done = True
            return
        if self.connection is not None and time.monotonic() - self._used_at < HEALTH_CHECK_AFTER_IDLE:
            self.health_check_done = True
            return
        super().close_if_health_check_failed()

    def ensure_usable_connection(self) -> None:
        """Connected, and — unless it answered a moment ago without an error since — the
        connection answers a ping; one that does not is closed and a new one opened."""
        self.health_check_done = False
        self.close_if_health_check_failed()
        self.ensure_connection()

    def mark_answered(self) -> None:
        """The server answered a round trip the raw path sent (``bankcore.db._send``)."""
        self._used_at = time.monotonic()

    def get_connection_params(self) -> dict[str, Any]:
        params = super().get_connection_params()
        params["client_flag"] = params.get("client_flag", 0) | CLIENT.MULTI_STATEMENTS
        return params

    def create_cursor(self, name: str | None = None) -> CursorWrapper:
        # Called for every cursor after the health check (not by ensure_connection, which
        # Django's own request-boundary check calls too).
        self._used_at = time.monotonic()
        return CursorWrapper(self.connection.cursor())
