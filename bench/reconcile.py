"""Reconciliation at scale: how long ``manage.py reconcile`` takes over a million entries.

    .venv/bin/python bench/reconcile.py [--entries 1000000] [--accounts 10000]

Starts two MariaDB servers as the test suite does (``bankcore.testing.servers``), migrates them,
opens --accounts funded accounts (each opening a completed cash deposit: two entries), then seeds
completed cross-ledger transfers up to --entries entries with bulk INSERTs in raw SQL (the control
plane's transfer, the debit entry in one ledger, the credit entry in the other; the balances set
from the entries in one UPDATE), and times one full reconciliation, as the command runs it. The
books it seeds are clean: it fails unless reconciliation finds nothing. Not a test: figures, not
assertions (docs/performance.md, "Recovery and reconciliation at scale").
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bankcore.testing.servers import MariaDBServer, remove_tree  # noqa: E402
from bench.run import _configure, _create_databases, _seed_accounts  # noqa: E402

BATCH = 10_000


def _seed_transfers(servers: list[MariaDBServer], accounts: dict[str, list[tuple[int, str]]], count: int) -> None:
    """``count`` completed cross-ledger transfers, alternately db1 → db2 and db2 → db1, of 1 to 100
    each: the control plane's rows and both ledgers' entries in multi-row INSERTs, ``BATCH`` rows a
    statement (mysqlclient's executemany makes one statement of many rows when every value is a
    placeholder); then every account's ``posted`` set to the sum of its entries."""
    import MySQLdb

    ledgers = sorted(accounts)
    databases = {"db1": "bank_source", "db2": "bank_dest"}
    control = MySQLdb.connect(host="127.0.0.1", port=servers[0].port, user="root", passwd="", db="bank_core")
    books = {
        ledger: MySQLdb.connect(host="127.0.0.1", port=server.port, user="root", passwd="", db=databases[ledger])
        for ledger, server in zip(ledgers, servers, strict=True)
    }
    rng = random.Random(7)
    now = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5)
    transfers: list[tuple[object, ...]] = []
    entries: dict[str, list[tuple[object, ...]]] = {ledger: [] for ledger in ledgers}

    def flush() -> None:
        control.cursor().executemany(
            "INSERT INTO transfers_transfer (id, kind, status, source_account, source_ledger, destination_account, "
            "destination_ledger, amount, currency, reference, failure_code, failure_detail, client_id, "
            "request_hash, business_date, deadline, channel, created_at, committed_at, finished_at) VALUES "
            f"({', '.join(['%s'] * 20)})",
            transfers,
        )
        control.commit()
        transfers.clear()
        for ledger, rows in entries.items():
            books[ledger].cursor().executemany(
                "INSERT INTO accounts_entry (account_id, amount, balance_after, kind, transfer_id, description, "
                "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
            books[ledger].commit()
            rows.clear()

    for n in range(count):
        source, destination = (ledgers[0], ledgers[1]) if n % 2 == 0 else (ledgers[1], ledgers[0])
        (source_pk, source_number), (destination_pk, destination_number) = (
            rng.choice(accounts[source]),
            rng.choice(accounts[destination]),
        )
        transfer_id = uuid.uuid4().hex
        amount = rng.randint(1, 100)
        transfers.append(
            (
                transfer_id,
                "transfer",
                "completed",
                source_number,
                source,
                destination_number,
                destination,
                amount,
                "CNY",
                "",
                "",
                "",
                "command:bench",
                "bench",
                now.date(),
                now,
                "command",
                now,
                now,
                now,
            )
        )
        entries[source].append((source_pk, -amount, 0, "transfer", transfer_id, "", now))
        entries[destination].append((destination_pk, amount, 0, "transfer", transfer_id, "", now))
        if len(transfers) == BATCH:
            flush()
    flush()
    for connection in books.values():
        cursor = connection.cursor()
        cursor.execute(
            "UPDATE accounts_account a JOIN (SELECT account_id, SUM(amount) AS total FROM accounts_entry "
            "GROUP BY account_id) e ON e.account_id = a.id SET a.posted = e.total"
        )
        connection.commit()
    for connection in (control, *books.values()):
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bankcore-bench-reconcile-"))
    servers = [MariaDBServer(base, f"db{n}") for n in (1, 2)]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: s.start(), servers))
        _configure(servers)
        _create_databases(servers)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate_ledgers", verbosity=0)
        started = time.monotonic()
        accounts = _seed_accounts(args.accounts)
        openings = 2 * sum(len(numbers) for numbers in accounts.values())
        transfers = max(0, (args.entries - openings) // 2)
        _seed_transfers(servers, accounts, transfers)
        from django.conf import settings

        from accounts.models import Entry

        entries = sum(Entry.objects.using(ledger).count() for ledger in settings.LEDGERS)
        print(
            f"seeded {entries} entries ({args.accounts} accounts' openings, {transfers} cross-ledger transfers) "
            f"in {time.monotonic() - started:.1f}s; MariaDB x2 as the test suite starts them; {os.cpu_count()} CPUs",
            flush=True,
        )
        from django.db import connections

        connections.close_all()
        started = time.monotonic()
        call_command("reconcile")
        elapsed = time.monotonic() - started
        print(f"reconcile: {entries} entries in {elapsed:.1f}s ({entries / elapsed:,.0f} entries/s)")
    finally:
        for server in servers:
            server.kill()
        remove_tree(base)


if __name__ == "__main__":
    main()
