"""Recovery and reconciliation at scale: how fast recovery settles stuck transfers, and how long
``manage.py reconcile`` takes over the books afterwards.

    .venv/bin/python bench/scale.py [--transfers 10000] [--entries 1000000] [--accounts 10000]

Starts two MariaDB servers as the test suite does (``bankcore.testing.servers``), opens --accounts
funded accounts and seeds completed cross-ledger transfers up to --entries entries
(``bench.reconcile``). Then, for each kind of stuck transfer in turn, it seeds --transfers / 4 of
them with bulk INSERTs in raw SQL, in the states a crash leaves (every one crosses the ledgers,
alternately db1 → db2 and db2 → db1, so both shapes of the two-phase protocol are there: with the
control plane on db1's server the leg there is prepared with the accept), runs one recovery pass
(``transfers_recover`` as the recovery worker runs it) and prints the transfers settled per second:

- forward: PENDING past its grace, one leg PREPARED, the other COMMITTED with its entry: finished
  forward (the prepared leg committed, the transfer COMPLETED);
- void: PENDING past its deadline, one leg PREPARED, no decision: tombstone, ABORTED, leg voided;
- hint: COMMITTED in the control plane (the coordinator's hint), as forward otherwise;
- orphan: a PREPARED leg whose transfer the control plane does not know (half) or ABORTED (half):
  voided.

Then it checks that nothing is left stuck or held, times one full reconciliation as the command
runs it, and fails unless the books are clean. Not a test: figures, not assertions
(docs/performance.md, "Recovery and reconciliation at scale").
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bankcore.testing.servers import MariaDBServer, remove_tree  # noqa: E402
from bench.reconcile import _seed_transfers  # noqa: E402
from bench.run import _configure, _create_databases, _seed_accounts  # noqa: E402

KINDS = ("forward", "void", "hint", "orphan")
DATABASES = {"db1": "bank_source", "db2": "bank_dest"}
BATCH = 5000


def _connect(server: MariaDBServer, database: str) -> Any:
    import MySQLdb

    return MySQLdb.connect(host="127.0.0.1", port=server.port, user="root", passwd="", db=database)


def _seed_stuck(
    servers: list[MariaDBServer], accounts: dict[str, list[tuple[int, str]]], kind: str, count: int, seed: int
) -> None:
    """``count`` stuck transfers of ``kind`` (module docstring), with multi-row INSERTs: the control
    plane's rows, the legs, the decided legs' entries; then every account's ``posted`` set from its
    entries and its pending counters from its PREPARED legs, so the books balance as the engine
    would have left them."""
    rng = random.Random(seed)
    control = _connect(servers[0], "bank_core")
    books = {ledger: _connect(server, DATABASES[ledger]) for ledger, server in zip(DATABASES, servers, strict=True)}
    now = datetime.now(UTC).replace(tzinfo=None)
    created = now - timedelta(minutes=5)
    transfers: list[tuple[Any, ...]] = []
    legs: dict[str, list[tuple[Any, ...]]] = {ledger: [] for ledger in DATABASES}
    entries: dict[str, list[tuple[Any, ...]]] = {ledger: [] for ledger in DATABASES}

    def flush() -> None:
        if transfers:
            control.cursor().executemany(
                "INSERT INTO transfers_transfer (id, kind, status, source_account, source_ledger, "
                "destination_account, destination_ledger, amount, currency, reference, failure_code, "
                "failure_detail, client_id, request_hash, business_date, deadline, channel, created_at, "
                f"committed_at, finished_at) VALUES ({', '.join(['%s'] * 20)})",
                transfers,
            )
            control.commit()
            transfers.clear()
        for ledger, connection in books.items():
            if legs[ledger]:
                connection.cursor().executemany(
                    "INSERT INTO transfers_transferleg (transfer_id, leg, account_id, amount, state, kind, "
                    "business_date, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    legs[ledger],
                )
            if entries[ledger]:
                connection.cursor().executemany(
                    "INSERT INTO accounts_entry (account_id, amount, balance_after, kind, transfer_id, description, "
                    "created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    entries[ledger],
                )
            connection.commit()
            legs[ledger].clear()
            entries[ledger].clear()

    for n in range(count):
        source, destination = ("db1", "db2") if n % 2 == 0 else ("db2", "db1")
        (source_pk, source_number), (destination_pk, destination_number) = (
            rng.choice(accounts[source]),
            rng.choice(accounts[destination]),
        )
        transfer_id, amount = uuid.uuid4().hex, rng.randint(1, 100)
        debit = ("debit", source, source_pk, -amount)
        credit = ("credit", destination, destination_pk, amount)
        # The leg in db1, the control plane's server, is prepared with the accept; the other decides.
        prepared, decided = (debit, credit) if source == "db1" else (credit, debit)
        status = {"hint": "committed", "orphan": "aborted"}.get(kind, "pending")
        deadline = now - timedelta(minutes=1) if kind in ("void", "orphan") else now + timedelta(minutes=1)
        if kind != "orphan" or n % 4 >= 2:  # half the orphans' transfers lost with a restored backup
            transfers.append(
                (
                    transfer_id,
                    "transfer",
                    status,
                    source_number,
                    source,
                    destination_number,
                    destination,
                    amount,
                    "CNY",
                    "",
                    "transfer_timed_out" if status == "aborted" else "",
                    "",
                    "command:bench",
                    "bench",
                    now.date(),
                    deadline,
                    "command",
                    created,
                    created if status == "committed" else None,
                    created if status == "aborted" else None,
                )
            )
        leg, ledger, account_pk, _ = prepared
        legs[ledger].append(
            (transfer_id, leg, account_pk, amount, "prepared", "transfer", now.date(), created, created)
        )
        if kind in ("forward", "hint"):
            leg, ledger, account_pk, delta = decided
            legs[ledger].append(
                (transfer_id, leg, account_pk, amount, "committed", "transfer", now.date(), created, created)
            )
            entries[ledger].append((account_pk, delta, 0, "transfer", transfer_id, "", created))
        if len(transfers) >= BATCH:
            flush()
    flush()
    for connection in books.values():
        cursor = connection.cursor()
        cursor.execute(
            "UPDATE accounts_account a JOIN (SELECT account_id, SUM(amount) AS total FROM accounts_entry "
            "GROUP BY account_id) e ON e.account_id = a.id SET a.posted = e.total"
        )
        cursor.execute(
            "UPDATE accounts_account a JOIN (SELECT account_id, SUM(CASE WHEN leg = 'debit' THEN amount ELSE 0 END) "
            "AS debits, SUM(CASE WHEN leg = 'credit' THEN amount ELSE 0 END) AS credits FROM transfers_transferleg "
            "WHERE state = 'prepared' GROUP BY account_id) l ON l.account_id = a.id "
            "SET a.pending_debits = l.debits, a.pending_credits = l.credits"
        )
        connection.commit()
    for connection in (control, *books.values()):
        connection.close()


def _left_stuck() -> tuple[int, int]:
    """(transfers PENDING or COMMITTED, legs PREPARED): what recovery left unsettled."""
    from django.conf import settings

    from transfers.models import Transfer, TransferLeg

    transfers = Transfer.objects.filter(status__in=[Transfer.Status.PENDING, Transfer.Status.COMMITTED]).count()
    legs = sum(
        TransferLeg.objects.using(ledger).filter(state=TransferLeg.State.PREPARED).count()
        for ledger in settings.LEDGERS
    )
    return transfers, legs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=10_000, help="stuck transfers, a quarter of each kind")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bankcore-bench-scale-"))
    servers = [MariaDBServer(base, f"db{n}") for n in (1, 2)]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: s.start(), servers))
        _configure(servers)
        _create_databases(servers)
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        from transfers.recovery import transfers_recover

        call_command("migrate_ledgers", verbosity=0)
        started = time.monotonic()
        accounts = _seed_accounts(args.accounts)
        openings = 2 * sum(len(numbers) for numbers in accounts.values())
        _seed_transfers(servers, accounts, max(0, (args.entries - openings) // 2))
        print(
            f"seeded {args.accounts} accounts and {max(openings, args.entries)} entries in "
            f"{time.monotonic() - started:.1f}s; MariaDB x2 as the test suite starts them; {os.cpu_count()} CPUs",
            flush=True,
        )
        per_kind = args.transfers // len(KINDS)
        settled, spent = 0, 0.0
        for n, kind in enumerate(KINDS):
            started = time.monotonic()
            _seed_stuck(servers, accounts, kind, per_kind, seed=n)
            seeding = time.monotonic() - started
            connections.close_all()
            started = time.monotonic()
            report = transfers_recover()
            elapsed = time.monotonic() - started
            settled, spent = settled + per_kind, spent + elapsed
            print(
                f"recovery, {kind:>7}: {per_kind} transfers in {elapsed:.2f}s = {per_kind / elapsed:,.0f}/s "
                f"(seeded in {seeding:.1f}s) {dict(report.actions)}{' errors: ' + str(report.errors[:3]) if report.errors else ''}",
                flush=True,
            )
            left = _left_stuck()
            if left != (0, 0):
                raise SystemExit(f"recovery left {left[0]} transfers unfinished and {left[1]} legs prepared")
        print(f"recovery, all: {settled} transfers in {spent:.2f}s = {settled / spent:,.0f}/s", flush=True)
        from accounts.models import Entry

        entries = sum(Entry.objects.using(ledger).count() for ledger in DATABASES)
        connections.close_all()
        started = time.monotonic()
        call_command("reconcile")  # exits 1 unless the books are clean
        elapsed = time.monotonic() - started
        print(f"reconcile: {entries} entries in {elapsed:.1f}s ({entries / elapsed:,.0f} entries/s)")
    finally:
        for server in servers:
            server.kill()
        remove_tree(base)


if __name__ == "__main__":
    main()
