"""Benchmark of the bulk API (``POST /api/v1/transfer-batches/``) beside the raw one-at-a-time
baseline of the same run, on the same servers.

    .venv/bin/python bench/batch.py [--seconds 10] [--clients 32] [--batch-clients 4] [--batch-size 100]

Starts two durable MariaDB servers and a Redis, seeds funded accounts linked to one partner and
starts gunicorn with the production settings, as bench/api.py does (its code, reused), then
measures, each for --seconds:

  raw    mysqlclient, no Django, --clients processes: UPDATE+INSERT on server A, then on server B,
         one transfer at a time (bench/run.py's raw path)
  bulk   --batch-clients processes, each posting batches of --batch-size cross-ledger transfers
         over keep-alive HTTP with a JWT and a fresh Idempotency-Key per batch (201 expected)

Prints transfers/s of each, the ratio bulk/raw, the latency of a batch, and reconciles the books at
the end. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bankcore.testing.servers import MariaDBServer, RedisServer, free_port, remove_tree  # noqa: E402
from bench import plot  # noqa: E402
from bench.api import _access_token, _Connection, _gunicorn, _partner, _stack_start  # noqa: E402
from bench.run import (  # noqa: E402
    _SERVER_PIDS,
    _SERVER_PORTS,
    LAST_WINDOW_CPU,
    _arrivals,
    _measure,
    _raw_servers,
    _raw_worker,
    _seed_accounts,
)


def _bulk_worker(args: tuple[int, str, dict[str, list[tuple[int, str]]], int, float, int]) -> list[float]:
    """One client over one keep-alive connection, posting batches of ``size`` cross-ledger transfers
    until the window ends. Each transfer of a batch answered 201 counts, with the batch's latency."""
    port, token, accounts, size, seconds, seed = args
    ledgers = sorted(accounts)
    rng = random.Random(seed)
    connection = _Connection(port)
    head = f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
    latencies: list[float] = []
    errors: dict[int, int] = {}
    for _due in _arrivals(seed, seconds):
        items = []
        for n in range(size):
            a, b = rng.sample(ledgers, 2)
            items.append(
                {
                    "client_id": str(n),
                    "source_account": rng.choice(accounts[a])[1],
                    "destination_account": rng.choice(accounts[b])[1],
                    "amount": f"{rng.randint(1, 100)}.00",
                    "currency": "CNY",
                }
            )
        body = json.dumps({"items": items})
        request = (
            f"POST /api/v1/transfer-batches/ HTTP/1.1\r\n{head}Content-Type: application/json\r\n"
            f"Idempotency-Key: {uuid.uuid4().hex}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
        started = time.monotonic()
        status = connection.exchange(request)
        if status == 201:
            latencies += [time.monotonic() - started] * size
        else:
            errors[status] = errors.get(status, 0) + 1
    connection.close()
    if errors:
        print(f"  client {seed}: unexpected answers {errors}", file=sys.stderr, flush=True)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32, help="raw baseline clients")
    parser.add_argument("--batch-clients", type=int, default=4, help="bulk API clients, one batch in flight each")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--gunicorn-workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument("--gunicorn-threads", type=int, default=8)
    plot.add_option(parser)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bankcore-bench-batch-"))
    servers = [MariaDBServer(base, f"db{i}", durable=True) for i in (1, 2)]
    redis = RedisServer(base)
    gunicorn = None
    try:
        _stack_start(servers, redis)
        _SERVER_PIDS.extend(s.process.pid for s in servers if s.process is not None)
        _SERVER_PORTS.extend(s.port for s in servers)
        accounts = _seed_accounts(args.accounts)
        partner = _partner(accounts)
        from django.db import connections

        connections.close_all()
        port = free_port()
        gunicorn = _gunicorn(
            dict(os.environ), port, args.gunicorn_workers, args.gunicorn_threads, base / "gunicorn.log"
        )
        print(
            f"servers: MariaDB x2 durable, Redis; {args.accounts} accounts; gunicorn production settings, "
            f"{args.gunicorn_workers} workers x {args.gunicorn_threads} threads; raw: {args.clients} clients; "
            f"bulk: {args.batch_clients} clients x batches of {args.batch_size} cross-ledger transfers; "
            f"{args.seconds:.0f}s per run; {os.cpu_count()} CPUs",
            flush=True,
        )
        token = _access_token(partner)
        # A short warm-up: gunicorn workers import the app and open connections on first use.
        _measure(args.batch_clients, _bulk_worker, lambda i: (port, token, accounts, args.batch_size, 2.0, 10_000 + i))

        raw_servers = _raw_servers(servers)
        measured: dict[str, tuple[tuple[float, float, float, int], dict[str, float]]] = {}
        runs: dict[str, tuple[int, Any, Any]] = {
            "raw": (args.clients, _raw_worker, lambda i: (raw_servers, accounts, args.seconds, 2000 + i)),
            "bulk": (
                args.batch_clients,
                _bulk_worker,
                lambda i: (port, _access_token(partner), accounts, args.batch_size, args.seconds, i),
            ),
        }
        for name, (clients, worker, make_args) in runs.items():
            measured[name] = (_measure(clients, worker, make_args), dict(LAST_WINDOW_CPU))
        gunicorn.terminate()
        gunicorn.wait(timeout=30)
        gunicorn = None

        from django.db.models import Count

        from transfers.models import Transfer
        from transfers.reconciliation import reconcile

        report = reconcile()
        statuses = dict(
            Transfer.objects.filter(batch__isnull=False).values_list("status").annotate(n=Count("id")).order_by()
        )
        print("\n| path | clients | transfers/s | p50 ms | p99 ms | transfers | CPU busy | CPU-ms/transfer |")
        print("|---|---|---|---|---|---|---|---|")
        for name, ((rate, p50, p99, count), cpu) in measured.items():
            clients = runs[name][0]
            print(
                f"| {name} | {clients} | {rate:.0f} | {p50:.1f} | {p99:.1f} | {count} | {cpu.get('busy', 0):.0%} "
                f"| {cpu.get('ms_per_transfer', 0):.2f} |"
            )
        raw_rate = measured["raw"][0][0]
        bulk_rate = measured["bulk"][0][0]
        print(f"\nbulk/raw {bulk_rate / raw_rate if raw_rate else float('nan'):.2f} (target: >= 1.0)")
        if args.plot:
            bars = [
                (f"{name} ({runs[name][0]} clients)", figures[0], figures[0] / raw_rate if raw_rate else None)
                for name, (figures, _) in measured.items()
            ]
            plot.rates(args.plot, bars)
        print(f"batch items by status: {statuses}")
        print(f"reconcile after the run: {'OK' if report.ok else report.discrepancies[:5]}")
    finally:
        if gunicorn is not None:
            gunicorn.terminate()
            gunicorn.wait(timeout=30)
        redis.stop()
        for server in servers:
            server.kill()
        remove_tree(base)


if __name__ == "__main__":
    multiprocessing.set_start_method("fork", force=True)
    main()
