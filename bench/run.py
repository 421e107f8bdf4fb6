"""Benchmark of the transfer engine against a raw-SQL baseline, on the same servers, in one run.

    .venv/bin/python bench/run.py [--seconds 10] [--workers 1,8,32] [--accounts 10000]

Starts two MariaDB servers with durable settings (innodb_flush_log_at_trx_commit=1, sync_binlog=1,
binlog on), creates --accounts funded accounts split over the two ledgers, then for each worker
count measures transfers/s and p50/p99 latency of:

  raw        mysqlclient, no Django: one UPDATE+INSERT commit on server A, then one on server B
             (each statement and the COMMIT its own round trip: the baseline of the ratios)
  raw-batched  the same, each commit's statements in one multi-statement round trip, as the
             engine sends its own (a reference; only with --scenarios naming it)
  same       transfer_create inside one ledger (one local atomic block)
  cross      transfer_create across ledgers (the two-phase protocol with the recovery table)

Workers are processes (the GIL would otherwise be the benchmark). Prints each figure and the ratio
to the raw baseline at the same concurrency. Not a test: figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bankcore.testing.servers import MariaDBServer, remove_tree  # noqa: E402
from bench import plot  # noqa: E402

OPENING = Decimal("1000000.00")


def _configure(servers: list[MariaDBServer]) -> None:
    for n, server in enumerate(servers, start=1):
        os.environ.update(server.env(f"DB{n}", {1: "bank_source", 2: "bank_dest"}[n]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bankcore.settings.development")
    os.environ["BANKCORE_FAULT_POINTS_ENABLED"] = "false"
    os.environ["DEBUG"] = "false"
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("BANKCORE_VAR_DIR", tempfile.mkdtemp(prefix="bankcore-bench-var-"))


def _create_databases(servers: list[MariaDBServer]) -> None:
    import MySQLdb

    for n, server in enumerate(servers, start=1):
        connection = MySQLdb.connect(host="127.0.0.1", port=server.port, user="root", passwd="")
        cursor = connection.cursor()
        names = ["bank_source", "bank_core"] if n == 1 else ["bank_dest"]
        for name in names:
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        connection.close()


RAW_DATABASE = "bench_raw"


def _raw_servers(servers: list[MariaDBServer]) -> list[dict[str, object]]:
    """The raw baseline's own copy of each ledger's account and entry tables, taken after seeding:
    its entries name no transfer of the control plane, so they stay out of the books that
    reconciliation reads after the run."""
    import MySQLdb

    result: list[dict[str, object]] = []
    for server, ledger in zip(servers, ("bank_source", "bank_dest"), strict=True):
        connection = MySQLdb.connect(host="127.0.0.1", port=server.port, user="root", passwd="")
        cursor = connection.cursor()
        cursor.execute(f"CREATE DATABASE {RAW_DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        for table in ("accounts_account", "accounts_entry"):
            cursor.execute(f"CREATE TABLE {RAW_DATABASE}.{table} LIKE {ledger}.{table}")
        cursor.execute(f"INSERT INTO {RAW_DATABASE}.accounts_account SELECT * FROM {ledger}.accounts_account")
        cursor.execute(
            f"ALTER TABLE {RAW_DATABASE}.accounts_entry ADD FOREIGN KEY (account_id) "
            f"REFERENCES {RAW_DATABASE}.accounts_account (id)"
        )
        connection.commit()
        connection.close()
        result.append({"port": server.port, "db": RAW_DATABASE})
    return result


def _seed_accounts(total: int) -> dict[str, list[tuple[int, str]]]:
    """Fund ``total`` accounts quickly (bulk inserts), keeping the books balanced: each opening
    is a completed cash deposit in the control plane, an entry on the account and its mirror on
    the ledger's cash account, and each account has its ``account.opened`` event, as reconciliation
    expects of every customer account."""
    from datetime import timedelta

    from django.conf import settings
    from django.db import connections, transaction
    from django.utils import timezone

    from accounts.models import Account, Entry
    from accounts.numbers import account_number_make
    from accounts.services import cash_account_ensure
    from audit.chain import audit_event_mac
    from audit.models import AuditEvent
    from bankcore.actors import Channel
    from transfers.models import Transfer

    per_ledger = total // len(settings.LEDGERS)
    result: dict[str, list[tuple[int, str]]] = {}
    for ledger, code in settings.LEDGERS.items():
        cash = cash_account_ensure(ledger=ledger, currency="CNY")
        with transaction.atomic(using=ledger):
            Account.objects.using(ledger).bulk_create(
                [Account(holder=f"Bench {ledger} {i}", currency="CNY", posted=OPENING) for i in range(per_ledger)],
                batch_size=2000,
            )
            accounts = list(Account.objects.using(ledger).filter(holder__startswith="Bench ").order_by("pk"))
            for account in accounts:
                account.number = account_number_make(ledger_code=code, serial=account.pk)
            Account.objects.using(ledger).bulk_update(accounts, ["number"], batch_size=2000)
            entries, deposits = [], []
            now = timezone.now()
            for account in accounts:
                opening = uuid.uuid4()
                deposits.append(
                    Transfer(
                        id=opening,
                        kind=Transfer.Kind.DEPOSIT,
                        status=Transfer.Status.COMPLETED,
                        # Account.number is nullable only until numbered, as these are above.
                        source_account=cast(str, cash.number),
                        source_ledger=ledger,
                        destination_account=cast(str, account.number),
                        destination_ledger=ledger,
                        amount=OPENING,
                        currency="CNY",
                        client_id="command:bench",
                        request_hash="bench",
                        business_date=now.date(),
                        deadline=now + timedelta(seconds=60),
                        channel=Channel.COMMAND,
                        committed_at=now,
                        finished_at=now,
                    )
                )
                entries.append(
                    Entry(account=account, amount=OPENING, balance_after=OPENING, kind="deposit", transfer_id=opening)
                )
                entries.append(
                    Entry(
                        account=cash,
                        amount=-OPENING,
                        balance_after=Decimal("0.00"),
                        kind="deposit",
                        transfer_id=opening,
                    )
                )
            Transfer.objects.bulk_create(deposits, batch_size=2000)
            Entry.objects.using(ledger).bulk_create(entries, batch_size=2000)
            Account.objects.using(ledger).filter(pk=cash.pk).update(posted=-OPENING * len(accounts))
        events = [
            AuditEvent(
                created_at=now,
                actor_name="bench",
                channel=Channel.COMMAND,
                action="account.opened",
                object_type="account",
                object_id=str(account.number),
                ledger=ledger,
                changes={"holder": account.holder, "currency": "CNY", "allow_overdraft": False},
            )
            for account in accounts
        ]
        # Written out, not bulk_create: auto_now_add would replace the time the row MAC covers.
        with connections["default"].cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {AuditEvent._meta.db_table} (created_at, actor_name, channel, action, object_type, "
                "object_id, ledger, changes, request_id, row_mac, prev_hash, hash) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, '', %s, '', '')",
                [
                    (
                        connections["default"].ops.adapt_datetimefield_value(event.created_at),
                        event.actor_name,
                        event.channel,
                        event.action,
                        event.object_type,
                        event.object_id,
                        event.ledger,
                        json.dumps(event.changes),
                        audit_event_mac(event),
                    )
                    for event in events
                ],
            )
        result[ledger] = [(a.pk, cast(str, a.number)) for a in accounts]
    return result


# --- workers --------------------------------------------------------------------------------------


def _engine_worker(args: tuple[str, dict[str, list[tuple[int, str]]], float, int]) -> list[float]:
    scenario, accounts, seconds, seed = args
    import django

    django.setup()
    from transfers.services import transfer_create

    return _engine_loop(transfer_create, scenario, accounts, seconds, seed)


def _engine_loop(
    transfer_create: Callable[..., object],
    scenario: str,
    accounts: dict[str, list[tuple[int, str]]],
    seconds: float,
    seed: int,
) -> list[float]:
    """One client's transfers over the window, each by ``transfer_create``; their latencies."""
    from bankcore.actors import Actor, Channel
    from bankcore.errors import ApplicationError

    ledgers = sorted(accounts)
    rng = random.Random(seed)
    actor = Actor.system(Channel.API, f"bench-{seed}")
    latencies: list[float] = []
    failures = 0
    # One transfer before the window, as the API's gunicorn workers are warmed up before theirs: a
    # fresh process's first transfer opens its connections and imports what is loaded lazily.
    first, last = ledgers[0], ledgers[-1]  # across ledgers when there are two, as "cross" runs
    transfer_create(
        actor=actor,
        source_account=accounts[first][seed % len(accounts[first])][1],
        destination_account=accounts[last][(seed + 1) % len(accounts[last])][1],
        amount="1.00",
        currency="CNY",
    )
    for due in _arrivals(seed, seconds):
        if scenario == "cross":
            a, b = rng.sample(ledgers, 2)
        else:
            a = b = rng.choice(ledgers)
        source = rng.choice(accounts[a])[1]
        destination = rng.choice(accounts[b])[1]
        if source == destination:
            continue
        started = time.monotonic() if due is None else due
        try:
            transfer_create(
                actor=actor,
                source_account=source,
                destination_account=destination,
                amount=f"{rng.randint(1, 100)}.00",
                currency="CNY",
            )
        except ApplicationError:
            failures += 1
            continue
        latencies.append(time.monotonic() - started)
    return latencies


def _raw_batched_worker(
    args: tuple[list[dict[str, object]], dict[str, list[tuple[int, str]]], float, int],
) -> list[float]:
    """The raw baseline with each commit's statements in one multi-statement round trip, as the
    engine sends its own (``bankcore.db.server_transaction``): a reference, not the target's."""
    return _raw_worker(args, batched=True)


def _raw_worker(
    args: tuple[list[dict[str, object]], dict[str, list[tuple[int, str]]], float, int], *, batched: bool = False
) -> list[float]:
    servers, accounts, seconds, seed = args
    import MySQLdb
    from MySQLdb.constants import CLIENT

    ledgers = sorted(accounts)
    connections = [
        MySQLdb.connect(
            host="127.0.0.1",
            port=s["port"],
            user="root",
            passwd="",
            db=s["db"],
            autocommit=batched,
            client_flag=CLIENT.MULTI_STATEMENTS if batched else 0,
        )
        for s in servers
    ]
    rng = random.Random(seed)
    latencies: list[float] = []
    for due in _arrivals(seed, seconds):
        a, b = rng.sample(range(len(ledgers)), 2)
        source = rng.choice(accounts[ledgers[a]])[0]
        destination = rng.choice(accounts[ledgers[b]])[0]
        amount = Decimal(rng.randint(1, 100))
        transfer_id = uuid.uuid4().hex
        started = time.monotonic() if due is None else due
        for index, account_id, delta in ((a, source, -amount), (b, destination, amount)):
            cursor = connections[index].cursor()
            update = "UPDATE accounts_account SET posted = posted + %s WHERE id = %s"
            insert = (
                "INSERT INTO accounts_entry (account_id, amount, balance_after, kind, transfer_id, description, created_at)"
                " VALUES (%s, %s, 0, 'transfer', %s, '', NOW(6))"
            )
            if batched:
                cursor.execute(
                    f"START TRANSACTION; {update}; {insert}; COMMIT",
                    (delta, account_id, account_id, delta, transfer_id),
                )
                while cursor.nextset():
                    pass
                continue
            cursor.execute(update, (delta, account_id))
            cursor.execute(insert, (account_id, delta, transfer_id))
            connections[index].commit()
        latencies.append(time.monotonic() - started)
    for connection in connections:
        connection.close()
    return latencies


# The measured window: every worker waits for its start, then works for the same seconds, so
# that forking and connecting are not counted (CLOCK_MONOTONIC is one clock for all processes).
_START_AT = 0.0
# Whole-machine CPU of the last measured window (clients, servers and kernel together), from
# /proc/stat: busy fraction and CPU-milliseconds per transfer. Tells a CPU-bound run from an
# fsync- or lock-bound one (docs/performance.md).
LAST_WINDOW_CPU: dict[str, float] = {}


def _cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs; (0, 0) where /proc/stat is missing."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


_SERVER_PIDS: list[int] = []  # the MariaDB servers' processes, whose own CPU is reported apart
_SERVER_PORTS: list[int] = []


def _history_lengths() -> list[int]:
    """Each server's InnoDB history list length: undo records of committed transactions that
    purge has yet to remove, background work that would otherwise land in the next window."""
    import MySQLdb

    lengths = []
    for port in _SERVER_PORTS:
        connection = MySQLdb.connect(host="127.0.0.1", port=port, user="root", passwd="")
        try:
            cursor = connection.cursor()
            cursor.execute("SHOW ENGINE INNODB STATUS")
            status = cursor.fetchone()[2]
            lengths.append(int(status.split("History list length", 1)[1].split()[0]))
        finally:
            connection.close()
    return lengths


def _settle(limit: int = 1000, timeout: float = 60.0) -> str:
    """Wait until purge has caught up on every server (history list at most ``limit``, or
    ``timeout``), so that no scenario pays for the one before it; says what it waited for."""
    started, before = time.monotonic(), _history_lengths()
    lengths = before
    while max(lengths, default=0) > limit and time.monotonic() - started < timeout:
        time.sleep(0.5)
        lengths = _history_lengths()
    waited = time.monotonic() - started
    return f"purge history {before} -> {lengths} in {waited:.1f}s" if waited >= 0.5 else ""


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far, from /proc (0 where it is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _window_start() -> float:
    time.sleep(max(0.0, _START_AT - time.monotonic()))
    return _START_AT


# The offered load per worker, in requests per second, for an open loop (bench/api.py --rate);
# 0 for a closed loop, where each worker sends its next request as soon as the last is answered.
# Set before the pool forks, as _START_AT is.
RATE_PER_WORKER = 0.0


def _arrivals(seed: int, seconds: float) -> Iterator[float | None]:
    """The requests of one worker over the window. A closed loop yields None until the window
    ends. An open loop yields the time (``time.monotonic()``) each request is due, Poisson arrivals
    at ``RATE_PER_WORKER``, after sleeping until then: the worker measures its latency from that
    time, so a request that could only be sent late, because the one before was not answered yet,
    counts its wait (no coordinated omission)."""
    deadline = _window_start() + seconds
    if RATE_PER_WORKER <= 0:
        while time.monotonic() < deadline:
            yield None
        return
    rng = random.Random(seed ^ 0x5EED)
    due = _START_AT + rng.expovariate(RATE_PER_WORKER)
    while due < deadline:
        time.sleep(max(0.0, due - time.monotonic()))
        yield due
        due += rng.expovariate(RATE_PER_WORKER)


def _measure(
    pool_size: int, worker: Callable[..., list[float]], make_args: Callable[..., tuple[Any, ...]]
) -> tuple[float, float, float, int]:
    """Run ``worker(make_args(i))`` in ``pool_size`` processes over one window; transfers/s over
    that window, p50 and p99 in ms, count. The workers' seconds come in their arguments."""
    global _START_AT
    from django.db import connections

    connections.close_all()
    settled = _settle()
    if settled:
        print(f"  (before the window: {settled})", flush=True)
    arguments = [make_args(i) for i in range(pool_size)]
    seconds = float(arguments[0][-2])
    context = multiprocessing.get_context("fork")
    _START_AT = time.monotonic() + 1.0 + 0.05 * pool_size
    with context.Pool(pool_size) as pool:
        pending = pool.map_async(worker, arguments)
        # The pool's own processes: the workers, whose CPU is reported apart too (for the partner
        # API's bench, the HTTP clients: load the server would not carry in production).
        worker_pids = [process.pid for process in pool._pool]  # type: ignore[attr-defined]
        time.sleep(max(0.0, _START_AT - time.monotonic()))
        busy_before, total_before = _cpu_times()
        servers_before = sum(_process_cpu_seconds(pid) for pid in _SERVER_PIDS)
        workers_before = sum(_process_cpu_seconds(pid) for pid in worker_pids)
        time.sleep(seconds)
        busy_after, total_after = _cpu_times()
        servers_after = sum(_process_cpu_seconds(pid) for pid in _SERVER_PIDS)
        workers_after = sum(_process_cpu_seconds(pid) for pid in worker_pids)
        results = pending.get()
    elapsed = seconds
    latencies = sorted(x for r in results for x in r)
    if not latencies:
        return 0.0, 0.0, 0.0, 0
    count = len(latencies)
    busy_fraction = (busy_after - busy_before) / max(total_after - total_before, 1e-9)
    LAST_WINDOW_CPU.update(
        busy=busy_fraction,
        ms_per_transfer=busy_fraction * (os.cpu_count() or 1) * seconds * 1000 / count,
        servers_ms_per_transfer=(servers_after - servers_before) * 1000 / count,
        workers_ms_per_transfer=(workers_after - workers_before) * 1000 / count,
    )
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(count - 1, int(count * 0.99))] * 1000
    return count / max(elapsed - 0.0, 1e-9), p50, p99, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", default="1,8,32")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--scenarios", default="raw,same,cross")
    plot.add_option(parser)
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    scenarios = args.scenarios.split(",")

    base = Path(tempfile.mkdtemp(prefix="bankcore-bench-"))
    servers = [MariaDBServer(base, f"db{n}", durable=True) for n in (1, 2)]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: s.start(), servers))
        _SERVER_PIDS.extend(s.process.pid for s in servers if s.process is not None)
        _SERVER_PORTS.extend(s.port for s in servers)
        _configure(servers)
        _create_databases(servers)
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate_ledgers", verbosity=0)
        started = time.monotonic()
        accounts = _seed_accounts(args.accounts)
        print(
            f"servers: MariaDB x2, durable (flush_log_at_trx_commit=1, sync_binlog=1, binlog ROW); "
            f"{args.accounts} accounts seeded in {time.monotonic() - started:.1f}s; {args.seconds:.0f}s per run; "
            f"{os.cpu_count()} CPUs"
        )
        raw_servers = _raw_servers(servers)
        raw: dict[int, float] = {}
        rows = []
        for n in workers:
            for scenario in scenarios:
                if scenario == "raw":
                    figures = _measure(n, _raw_worker, lambda i: (raw_servers, accounts, args.seconds, i))
                    raw[n] = figures[0]
                elif scenario == "raw-batched":
                    figures = _measure(n, _raw_batched_worker, lambda i: (raw_servers, accounts, args.seconds, i))
                else:
                    figures = _measure(
                        n, _engine_worker, lambda i, s=scenario, n=n: (s, accounts, args.seconds, 1000 * n + i)
                    )
                rate, p50, p99, count = figures
                ratio = rate / raw[n] if raw.get(n) else float("nan")
                busy, cpu_ms = LAST_WINDOW_CPU.get("busy", 0.0), LAST_WINDOW_CPU.get("ms_per_transfer", 0.0)
                server_ms = LAST_WINDOW_CPU.get("servers_ms_per_transfer", 0.0)
                rows.append((scenario, n, rate, p50, p99, count, ratio, busy, cpu_ms, server_ms))
                print(
                    f"{scenario:>6} {n:>3} workers: {rate:8.1f} transfers/s  p50 {p50:6.1f} ms  p99 {p99:7.1f} ms  "
                    f"({count} transfers)  ratio to raw {ratio:.2f}  CPU busy {busy:.0%}, {cpu_ms:.1f} CPU-ms/transfer "
                    f"({server_ms:.1f} in the servers)",
                    flush=True,
                )
        from transfers.reconciliation import reconcile

        report = reconcile()
        print(f"reconcile after the run: {'OK' if report.ok else report.discrepancies[:5]}")
        print(
            "\n| scenario | workers | transfers/s | p50 ms | p99 ms | ratio to raw | CPU busy | CPU-ms/transfer "
            "| of which servers |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for scenario, n, rate, p50, p99, _, ratio, busy, cpu_ms, server_ms in rows:
            print(
                f"| {scenario} | {n} | {rate:.0f} | {p50:.1f} | {p99:.1f} | {ratio:.2f} | {busy:.0%} | {cpu_ms:.1f} "
                f"| {server_ms:.1f} |"
            )
        if args.plot:
            plot.rates(args.plot, [(f"{row[0]}, {row[1]} workers", row[2], row[6]) for row in rows])
    finally:
        for server in servers:
            server.kill()
        remove_tree(base)


if __name__ == "__main__":
    main()
