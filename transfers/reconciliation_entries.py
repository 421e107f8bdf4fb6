"""Reconciliation's check that every entry of a ledger is explained by the control plane, and every
completed transfer by its entries (``entries_explained``, called by ``transfers.reconciliation``
inside the ledger's snapshot).

Set-wise, in chunks of transfer ids: a chunk's entries of the ledger and its transfers' legs in the
control plane, as two sets of texts "<transfer> <account> <signed amount>" that the servers write,
compared in C. Both servers work on the next chunk while this process compares the last one. At
a million entries, comparing entry by entry in Python, each with its transfer asked of the control
plane by id, was most of the time (docs/performance.md, "Recovery and reconciliation at scale").
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from itertools import compress
from operator import itemgetter
from typing import Any

from django.db import connections

from accounts.models import Account, Entry
from transfers.models import Transfer, TransferLeg
from transfers.sql_values import money_from_db

# At most this many lines per ledger name unexplained entries one by one; the rest are counted.
ENTRY_LINES_MAX = 100
ENTRIES_PHASE = "entries"
# Entries per chunk (a range of transfer ids, read alike from the ledger and the control plane), and
# transfer ids per query when the control plane is asked for the transfers of unexplained entries.
ENTRY_CHUNK = 50_000
IDS_PER_QUERY = 2000

# A leg as the books must show it and as its entry does, as one text the server writes: "<transfer
# id> <account number> <signed amount>", the id and the DECIMAL as the servers write them (the
# control plane is the same kind of server as a ledger). One text hashes and compares faster than
# a tuple of id, number and Decimal.
_Leg = str
Rows = list[tuple[Any, ...]]
# A transfer as an unexplained entry's message names it: (status, source ledger, source account,
# destination ledger, destination account, amount).
_Transfer = tuple[str, str, str, str, str, Decimal]


def _sent(alias: str, sql: str, params: list[Any]) -> Callable[[], Rows]:
    """Send a query and return what waits for its rows: on MariaDB/MySQL the server works on it
    while this process does something else (an embedded SQLite database answers at once)."""
    connection = connections[alias]
    if connection.vendor != "mysql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        return lambda: rows
    connection.ensure_connection()
    db = connection.connection
    with connection.wrap_database_errors:
        db.send_query(sql.encode() % tuple(map(db.literal, params)))

    def received() -> Rows:
        with connection.wrap_database_errors:
            db.read_query_result()
            return list(db.store_result().fetch_row(0))

    return received


def _id_range(column: str, after: Any, last: Any) -> tuple[str, list[Any]]:
    """SQL for ``after < column <= last``, either end open when None."""
    clauses, params = ["1 = 1"], []
    if after is not None:
        clauses.append(f"{column} > %s")
        params.append(after)
    if last is not None:
        clauses.append(f"{column} <= %s")
        params.append(last)
    return " AND ".join(clauses), params


def _chunk_last(ledger: str, after: Any) -> Any:
    """The transfer id that closes the chunk of ``ENTRY_CHUNK`` entries after ``after`` in the
    ledger's order of transfer ids (None: fewer are left, the chunk runs to the end), read from the
    entries' unique key (transfer, account) alone."""
    where, params = _id_range("transfer_id", after, None)
    with connections[ledger].cursor() as cursor:
        cursor.execute(
            f"SELECT transfer_id FROM {Entry._meta.db_table} WHERE {where} ORDER BY transfer_id LIMIT 1 OFFSET %s",
            [*params, ENTRY_CHUNK - 1],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _joined(vendor: str, *parts: str) -> str:
    """SQL for the text of ``parts`` joined by spaces (SQLite has no CONCAT_WS)."""
    return (
        f"CONVERT(CONCAT_WS(' ', {', '.join(parts)}) USING utf8mb4)" if vendor == "mysql" else " || ' ' || ".join(parts)
    )


def _chunk_sent(ledger: str, after: Any, last: Any, settled: datetime) -> Callable[[], tuple[Rows, Rows]]:
    """Send a chunk's two queries, each row a leg as text (``_Leg``): the ledger's entries of the
    transfers in the range (on an account the ledger lacks: named by its primary key), and the legs
    in ``ledger`` of the control plane's transfers in the range that are not ABORTED (an entry may
    stand for each: a debit −amount on its source, a credit +amount on its destination), each
    flagged 1 if its transfer COMPLETED before ``settled`` (then its entry must be there)."""
    vendor = connections[ledger].vendor
    number = "COALESCE(a.number, " + _joined(vendor, "'id'", "e.account_id") + ")"
    where, params = _id_range("e.transfer_id", after, last)
    entries = _sent(
        ledger,
        f"SELECT {_joined(vendor, 'e.transfer_id', number, 'CAST(e.amount AS CHAR)')} FROM {Entry._meta.db_table} e "
        f"LEFT JOIN {Account._meta.db_table} a ON a.id = e.account_id WHERE {where}",
        params,
    )
    vendor = connections["default"].vendor
    where, params = _id_range("id", after, last)
    done = "CASE WHEN status = %s AND finished_at < %s THEN 1 ELSE 0 END"
    done_params = [Transfer.Status.COMPLETED, connections["default"].ops.adapt_datetimefield_value(settled)]
    legs = _sent(
        "default",
        " UNION ALL ".join(
            f"SELECT {_joined(vendor, 'id', account, f'CAST({amount} AS CHAR)')}, {done} "
            f"FROM {Transfer._meta.db_table} WHERE {side}_ledger = %s AND status <> %s AND {where}"
            for side, account, amount in (
                ("source", "source_account", "-amount"),
                ("destination", "destination_account", "amount"),
            )
        ),
        [*done_params, ledger, Transfer.Status.ABORTED, *params] * 2,
    )
    return lambda: (entries(), legs())


def _transfers_by_id(ids: list[Any]) -> dict[Any, _Transfer]:
    """The control plane's transfers of ``ids``, by primary key, ``IDS_PER_QUERY`` per query."""
    connection = connections["default"]
    found: dict[Any, _Transfer] = {}
    with connection.cursor() as cursor:
        for start in range(0, len(ids), IDS_PER_QUERY):
            batch = ids[start : start + IDS_PER_QUERY]
            cursor.execute(
                f"SELECT id, status, source_ledger, source_account, destination_ledger, destination_account, amount "
                f"FROM {Transfer._meta.db_table} WHERE id IN ({', '.join(['%s'] * len(batch))})",
                batch,
            )
            for pk, status, source_ledger, source, destination_ledger, destination, amount in cursor.fetchall():
                found[pk] = (status, source_ledger, source, destination_ledger, destination, money_from_db(amount))
    return found


def _entry_unexplained(ledger: str, number: str, amount: Decimal, transfer_id: Any, transfer: _Transfer | None) -> str:
    """Why an entry that matches no leg of its transfer is a discrepancy."""
    where = f"{ledger}: entry of {amount} on account {number}"
    if transfer is None:
        return f"{where} names transfer {uuid_text(transfer_id)}, which the control plane does not know"
    where += f" for transfer {uuid_text(transfer_id)}"
    status, source_ledger, source, destination_ledger, destination, transfer_amount = transfer
    if status == Transfer.Status.ABORTED:
        return f"{where}, which was aborted"
    if source_ledger == ledger and number == source:
        return f"{where}: the transfer's {TransferLeg.Leg.DEBIT} there is {-transfer_amount}"
    if destination_ledger == ledger and number == destination:
        return f"{where}: the transfer's {TransferLeg.Leg.CREDIT} there is {transfer_amount}"
    return f"{where}, which does not move money on that account"


def _chunk_explained(ledger: str, entry_rows: Rows, leg_rows: Rows) -> tuple[int, list[str]]:
    """How many entries a chunk has, and the discrepancies it shows (the sets built in C: at a
    million entries a loop in Python over them was a third of the time)."""
    first = itemgetter(0)
    entries: set[_Leg] = set(map(first, entry_rows))
    legs: set[_Leg] = set(map(first, leg_rows))
    settled: set[_Leg] = set(compress(map(first, leg_rows), map(itemgetter(1), leg_rows)))
    found: list[str] = []
    unexplained = [_leg(text) for text in sorted(entries - legs)]
    transfers = _transfers_by_id(list({transfer_id for transfer_id, _, _ in unexplained}))
    for transfer_id, number, amount in unexplained:
        found.append(_entry_unexplained(ledger, number, money_from_db(amount), transfer_id, transfers.get(transfer_id)))
    unposted = settled - entries
    if unposted:  # an entry with another amount is unexplained above, not missing
        posted = {text.rsplit(" ", 1)[0] for text in entries}
        unposted = {text for text in unposted if text.rsplit(" ", 1)[0] not in posted}
    for transfer_id, number, amount in map(_leg, sorted(unposted)):
        leg = TransferLeg.Leg.DEBIT if amount.startswith("-") else TransferLeg.Leg.CREDIT
        found.append(
            f"{ledger}: transfer {uuid_text(transfer_id)} is completed but its {leg} of {amount} on account "
            f"{number} has no entry"
        )
    return len(entries), found


def _leg(text: _Leg) -> tuple[str, str, str]:
    """A leg's text (``_Leg``) as (transfer id, account, amount)."""
    transfer_id, rest = text.split(" ", 1)
    number, amount = rest.rsplit(" ", 1)
    return transfer_id, number, amount


def entries_explained(
    ledger: str,
    *,
    settled: datetime,
    progress: Callable[[str, int, int], None] | None,
) -> list[str]:
    """Every entry of ``ledger`` against the transfer it names in the control plane. The entries
    come from the snapshot open around this call, the transfers after it, so the transfer of every
    entry the snapshot holds is there (a transfer is accepted before any of its entries commits).

    An entry is explained by a transfer that is not ABORTED and has a leg on the entry's account
    with the entry's amount: a debit −amount on its source, a credit +amount on its destination.
    Anything else is a discrepancy: an entry for a transfer the control plane does not know (a
    forged entry), for an aborted one, on an account the transfer does not touch, or with another
    amount or sign. And each leg in this ledger of a transfer COMPLETED before ``settled`` must have
    its entry; one completed later may postdate the snapshot: left to the next run."""
    found: list[str] = []
    total = Entry.objects.using(ledger).count() if progress else 0
    done = 0
    last = _chunk_last(ledger, None)
    received: Callable[[], tuple[Rows, Rows]] | None = _chunk_sent(ledger, None, last, settled)
    while received is not None:
        entry_rows, leg_rows = received()
        received = None
        if last is not None:  # the servers read the next chunk while this one is compared
            following = _chunk_last(ledger, last)
            received = _chunk_sent(ledger, last, following, settled)
            last = following
        count, lines = _chunk_explained(ledger, entry_rows, leg_rows)
        found += lines
        done += count
        if progress:
            progress(f"{ledger} {ENTRIES_PHASE}", done, total)
    if len(found) > ENTRY_LINES_MAX:
        found[ENTRY_LINES_MAX:] = [
            f"{ledger}: {len(found) - ENTRY_LINES_MAX} more entries or transfers unexplained (not listed)"
        ]
    return found


def uuid_text(value: Any) -> str:
    """A transfer id as the rest of the project shows it, whatever form the server gave it in."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(value)
