"""Django's MySQL backend, with one fix for servers that die mid-query.

When a query fails because the server went away, Django's compiler closes the cursor before
re-raising; MySQLdb's ``cursor.close()`` then raises a *raw* ``MySQLdb.OperationalError`` (2006),
which is not a ``django.db.Error`` and replaces the wrapped error every caller expects. Seen in
the server-kill test. Closing a cursor on a dead connection has nothing left to clean up, so the
close error is dropped and the original (wrapped) error propagates.
"""

import MySQLdb
from django.db.backends.mysql import base


class CursorWrapper(base.CursorWrapper):
    def close(self) -> None:
        try:
            self.cursor.close()
        except MySQLdb.OperationalError:
            pass


class DatabaseWrapper(base.DatabaseWrapper):
    def create_cursor(self, name=None):  # type: ignore[no-untyped-def]
        return CursorWrapper(self.connection.cursor())
