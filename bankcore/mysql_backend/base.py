"""Django's MySQL backend, with one fix for servers that die mid-query, and multi-statement queries
on.

``bankcore.db.server_transaction`` sends a transaction's statements in as few round trips as it
can, as one multi-statement query each, which the client must ask for (CLIENT.MULTI_STATEMENTS).
Parameters are still escaped by the driver, one by one; nothing in the project puts two
statements in one string except ``bankcore.db``.

When a query fails because the server went away, Django's compiler closes the cursor before
re-raising; MySQLdb's ``cursor.close()`` then raises a *raw* ``MySQLdb.OperationalError`` (2006),
which is not a ``django.db.Error`` and replaces the wrapped error every caller expects. Seen in
the server-kill test. Closing a cursor on a dead connection has nothing left to clean up, so the
close error is dropped and the original (wrapped) error propagates.
"""

import MySQLdb
from django.db.backends.mysql import base
from MySQLdb.constants import CLIENT


class CursorWrapper(base.CursorWrapper):
    def close(self) -> None:
        try:
            self.cursor.close()
        except MySQLdb.OperationalError:
            pass


class DatabaseWrapper(base.DatabaseWrapper):
    def get_connection_params(self):  # type: ignore[no-untyped-def]
        params = super().get_connection_params()
        params["client_flag"] = params.get("client_flag", 0) | CLIENT.MULTI_STATEMENTS
        return params

    def create_cursor(self, name=None):  # type: ignore[no-untyped-def]
        return CursorWrapper(self.connection.cursor())
