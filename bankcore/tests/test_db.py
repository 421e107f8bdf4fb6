"""``bankcore.db.server_transaction``: statements batched into few round trips keep the semantics of
one transaction — all or nothing, errors raised inside it, a commit of unknown outcome told apart.
On a real MariaDB ledger, with a scratch table of its own."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, OperationalError, connections

from bankcore.db import CommitOutcomeUnknown, atomic_with_retry, defer, execute, on_commit, server_transaction

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

LEDGER = "db1"


@pytest.fixture
def scratch():
    with connections[LEDGER].cursor() as cursor:
        cursor.execute("CREATE TABLE db_test_scratch (id INT PRIMARY KEY, note VARCHAR(20) NOT NULL)")
    yield
    with connections[LEDGER].cursor() as cursor:
        cursor.execute("DROP TABLE db_test_scratch")


def rows() -> list[tuple[int, str]]:
    with connections[LEDGER].cursor() as cursor:
        cursor.execute("SELECT id, note FROM db_test_scratch ORDER BY id")
        return list(cursor.fetchall())


def test_deferred_writes_go_with_the_commit_and_callbacks_see_their_results(scratch):
    seen: list[int] = []
    committed: list[str] = []
    with server_transaction(LEDGER):
        defer(
            LEDGER,
            "INSERT INTO db_test_scratch VALUES (%s, %s)",
            [1, "one"],
            on_result=lambda r: seen.append(r.rowcount),
        )
        defer(LEDGER, "INSERT INTO db_test_scratch VALUES (%s, %s)", [2, "50% off"])  # a % in a value is data
        on_commit(LEDGER, lambda: committed.append("after"))
        assert seen == [] and committed == []  # nothing sent yet
    assert seen == [1] and committed == ["after"]
    assert rows() == [(1, "one"), (2, "50% off")]


def test_an_execute_sends_what_was_deferred_first_and_reads_it(scratch):
    with server_transaction(LEDGER):
        defer(LEDGER, "INSERT INTO db_test_scratch VALUES (%s, %s)", [1, "one"])
        assert execute(LEDGER, "SELECT COUNT(*) FROM db_test_scratch", []).rows == [(1,)]
        # An ORM (Django cursor) query inside also runs after what is pending, in the transaction.
        defer(LEDGER, "INSERT INTO db_test_scratch VALUES (%s, %s)", [2, "two"])
        with connections[LEDGER].cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM db_test_scratch")
            assert cursor.fetchone() == (2,)
    assert len(rows()) == 2


def test_a_deferred_write_that_fails_at_the_commit_rolls_everything_back(scratch):
    committed: list[str] = []
    with pytest.raises(IntegrityError), server_transaction(LEDGER):
        defer(LEDGER, "INSERT INTO db_test_scratch VALUES (%s, %s)", [1, "one"])
        defer(LEDGER, "INSERT INTO db_test_scratch VALUES (%s, %s)", [1, "duplicate"])
        defer(LEDGER, "INSERT INTO db_test_scratch VALUES (%s, %s)", [3, "never runs"])
        on_commit(LEDGER, lambda: committed.append("after"))
    assert rows() == [] and committed == []
    # The connection is usable afterwards: the failed transaction was rolled back, not left open.
    with server_transaction(LEDGER):
        defer(LEDGER, "INSERT INTO db_test_scratch VALUES (%s, %s)", [1, "again"])
    assert rows() == [(1, "again")]


def test_an_exception_in_the_work_sends_nothing_deferred(scratch):
    with pytest.raises(RuntimeError), server_transaction(LEDGER):
        execute(LEDGER, "INSERT INTO db_test_scratch VALUES (%s, %s)", [1, "sent"])
        defer(LEDGER, "INSERT INTO db_test_scratch VALUES (%s, %s)", [2, "pending"])
        raise RuntimeError("refused")
    assert rows() == []


def test_a_connection_lost_with_the_commit_is_an_unknown_outcome(scratch, monkeypatch):
    """The server went away while the batch with COMMIT was on its way: committed or not, only the
    server knows, and the caller must not take it for a refusal."""
    import MySQLdb

    with pytest.raises(CommitOutcomeUnknown) as raised, server_transaction(LEDGER):
        defer(LEDGER, "INSERT INTO db_test_scratch VALUES (%s, %s)", [1, "maybe"])
        raw_cursor = connections[LEDGER].connection.cursor().__class__

        def lost(self, query, args=None):
            raise MySQLdb.OperationalError(2013, "Lost connection to server during query (test)")

        monkeypatch.setattr(raw_cursor, "execute", lost)
    monkeypatch.undo()
    assert isinstance(raised.value, OperationalError)
    assert connections[LEDGER].connection is None  # closed: the next use reconnects
    assert rows() == []  # here it had not reached the server


def test_server_transactions_do_not_nest():
    with server_transaction(LEDGER), pytest.raises(RuntimeError), server_transaction(LEDGER):
        pass


def _request_boundary(alias: str) -> None:
    """What Django does to each connection at the start and end of a request."""
    connections[alias].close_if_unusable_or_obsolete()


def _select_one(alias: str) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")


def test_the_health_check_pings_only_a_connection_idle_for_a_while(monkeypatch):
    from bankcore.mysql_backend.base import HEALTH_CHECK_AFTER_IDLE

    connection = connections[LEDGER]
    _select_one(LEDGER)
    assert connection.health_check_enabled  # type: ignore[attr-defined]  # (not in django-stubs)
    monkeypatch.setattr(connection, "close_at", None)  # persistent, as CONN_MAX_AGE makes it
    pings: list[bool] = []
    usable = connection.is_usable

    def is_usable() -> bool:
        pings.append(usable())
        return pings[-1]

    monkeypatch.setattr(connection, "is_usable", is_usable)

    _request_boundary(LEDGER)
    _select_one(LEDGER)
    assert pings == []  # used a moment ago: no round trip for a ping

    connection._used_at -= HEALTH_CHECK_AFTER_IDLE  # type: ignore[attr-defined]
    _request_boundary(LEDGER)
    _select_one(LEDGER)
    assert pings == [True]


def test_a_connection_dropped_by_the_server_fails_one_request_and_the_next_reconnects(monkeypatch):
    """The trade of not pinging a connection used a moment ago: if the server drops it in that
    moment, the request that finds out fails (as it would between a ping and its query), and the
    end of that request closes the connection, so the next one gets a new one."""
    connection = connections[LEDGER]
    _select_one(LEDGER)
    monkeypatch.setattr(connection, "close_at", None)
    thread_id = connection.connection.thread_id()
    import MySQLdb

    settings = connection.settings_dict
    killer = MySQLdb.connect(
        host=settings["HOST"], port=int(settings["PORT"]), user=settings["USER"], password=settings["PASSWORD"]
    )
    try:
        killer.cursor().execute(f"KILL CONNECTION {int(thread_id)}")
    finally:
        killer.close()

    _request_boundary(LEDGER)
    with pytest.raises(OperationalError):
        _select_one(LEDGER)
    _request_boundary(LEDGER)  # the failed request's end: the connection no longer answers, closed
    _select_one(LEDGER)
    assert connection.connection.thread_id() != thread_id


def _server_drops(alias: str) -> int:
    """The server closes the alias's connection (as a restart does to every one); its thread id."""
    import MySQLdb

    connection = connections[alias]
    thread_id = connection.connection.thread_id()
    settings = connection.settings_dict
    killer = MySQLdb.connect(
        host=settings["HOST"], port=int(settings["PORT"]), user=settings["USER"], password=settings["PASSWORD"]
    )
    try:
        killer.cursor().execute(f"KILL CONNECTION {int(thread_id)}")
    finally:
        killer.close()
    return int(thread_id)


def test_a_transaction_that_finds_its_connection_dropped_before_the_commit_runs_again_on_a_new_one(
    scratch, monkeypatch
):
    """Used a moment ago, the connection is not pinged; its first round trip (no COMMIT in it)
    finds it dead. Nothing was written, so the block runs once more, on a new connection."""
    connection = connections[LEDGER]
    _select_one(LEDGER)
    monkeypatch.setattr(connection, "close_at", None)
    dropped = _server_drops(LEDGER)
    runs: list[int] = []

    def work() -> None:
        runs.append(1)
        assert execute(LEDGER, "SELECT COUNT(*) FROM db_test_scratch", []).rows == [(0,)]
        defer(LEDGER, "INSERT INTO db_test_scratch VALUES (%s, %s)", [1, "once"])

    atomic_with_retry(LEDGER, work)
    assert len(runs) == 2 and rows() == [(1, "once")]
    assert connection.connection.thread_id() != dropped


def test_a_connection_idle_for_a_while_is_checked_before_a_batch_that_carries_the_commit(scratch, monkeypatch):
    """A one-round-trip transaction (START … COMMIT in one batch) on a connection a server restart
    left dead would be an unknown outcome; the ping before it finds the connection dead first."""
    from bankcore.mysql_backend.base import HEALTH_CHECK_AFTER_IDLE

    connection = connections[LEDGER]
    _select_one(LEDGER)
    monkeypatch.setattr(connection, "close_at", None)
    dropped = _server_drops(LEDGER)
    connection._used_at -= HEALTH_CHECK_AFTER_IDLE  # type: ignore[attr-defined]

    with server_transaction(LEDGER):
        defer(LEDGER, "INSERT INTO db_test_scratch VALUES (%s, %s)", [1, "sure"])
    assert rows() == [(1, "sure")]
    assert connection.connection.thread_id() != dropped


def test_the_test_servers_hold_the_time_zones_django_converts_with(settings):
    """As a production server does (bankcore.testing.servers loads them): the admin's date
    hierarchy converts with CONVERT_TZ from UTC to TIME_ZONE, which is NULL without them."""
    from bankcore.testing.servers import TIME_ZONES

    assert set(TIME_ZONES) == {"UTC", settings.TIME_ZONE}
    for alias in ("default", *settings.LEDGERS):
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT CONVERT_TZ('2026-12-01 00:00:00', 'UTC', %s)", [settings.TIME_ZONE])
            assert str(cursor.fetchone()[0]) == "2026-12-01 08:00:00", alias
