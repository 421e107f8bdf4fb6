"""Benchmark of the partner API under gunicorn, beside the service-level and raw-SQL figures of
the same run, on the same servers.

    .venv/bin/python bench/api.py [--seconds 10] [--clients 32] [--accounts 2000] [--rounds 1] [--rate 0] [--paths api,service]

Starts two durable MariaDB servers (as bench/run.py) and a Redis (the throttle counts), seeds
funded accounts linked to one partner, starts gunicorn with the production settings and
deploy/gunicorn.conf.py (gthread, persistent database connections), then measures, each for
--seconds with --clients concurrent clients (processes):

  api        POST /api/v1/transfers/ across ledgers over keep-alive HTTP with a JWT and a fresh
             Idempotency-Key per request (201 expected)
  api read   GET /api/v1/accounts/{number}/ the same way (200 expected): the door's own cost, the
             same authentication, throttle and partner-link check with one ledger read instead of
             a transfer (its row counts requests, not transfers)
  service    transfer_create across ledgers called directly (bench/run.py's worker)
  api gc     as api, on a second gunicorn with GROUP_COMMIT on (transfers/group_commit.py)
  service gc the service's transfers with group commit: the clients are threads, spread over as
             many processes as gunicorn has workers, as the API's requests are
  raw        mysqlclient, no Django: UPDATE+INSERT on server A, then on server B (bench/run.py)

By default each client sends its next request as soon as the last is answered (a closed loop: the
throughput ceiling, where latency is mostly queueing). With --rate R the clients offer R requests per
second in all, as Poisson arrivals, and each latency counts from when its request was due: the
latency a partner sees below saturation.

Prints transfers/s, p50 and p99, the whole machine's CPU per transfer (clients, app, servers and kernel;
the MariaDB servers' share and the HTTP clients' apart), and the ratios api/service, api/raw and
service/raw, with and without group commit. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.run as bench_run  # noqa: E402
from bankcore.testing.servers import MariaDBServer, RedisServer, free_port, remove_tree  # noqa: E402
from bench import plot  # noqa: E402
from bench.run import (  # noqa: E402
    _SERVER_PIDS,
    _SERVER_PORTS,
    LAST_WINDOW_CPU,
    _arrivals,
    _configure,
    _create_databases,
    _engine_loop,
    _engine_worker,
    _measure,
    _raw_servers,
    _raw_worker,
    _seed_accounts,
)

PARTNER = "bench-partner"


def _partner(accounts: dict[str, list[tuple[int, str]]]) -> Any:
    """A partner linked to every bench account."""
    from django.contrib.auth.models import User

    from accounts.models import PartnerAccountLink

    user = User.objects.create_user(username=PARTNER, password=secrets.token_urlsafe(16))
    PartnerAccountLink.objects.bulk_create(
        [PartnerAccountLink(user=user, account_number=number) for rows in accounts.values() for _, number in rows],
        batch_size=2000,
    )
    return user


_tokens: dict[int, tuple[float, str]] = {}


def _access_token(user: Any) -> str:
    """A JWT access token for ``user`` (signed with the JWT_SECRET_KEY that gunicorn gets too),
    made afresh once a minute: one lives JWT_ACCESS_TOKEN_MINUTES (5), and a run of several rounds
    is longer; an expired one would make every request of the windows after it a 401."""
    from rest_framework_simplejwt.tokens import RefreshToken

    made, token = _tokens.get(user.pk, (0.0, ""))
    if time.monotonic() - made > 60:
        made, token = time.monotonic(), str(RefreshToken.for_user(user).access_token)
        _tokens[user.pk] = (made, token)
    return token


def _api_worker(args: tuple[int, str, dict[str, list[tuple[int, str]]], float, int]) -> list[float]:
    return _http_worker(args, read=False)


def _api_read_worker(args: tuple[int, str, dict[str, list[tuple[int, str]]], float, int]) -> list[float]:
    return _http_worker(args, read=True)


class _Connection:
    """A keep-alive HTTP/1.1 client with as little of its own CPU as it can: the clients share the
    machine's two CPUs with the server they measure, and http.client's header parsing (through the
    email package) would add a noticeable share of a transfer's CPU.
    Reads a Content-Length or chunked response; reconnects when the server closes."""

    def __init__(self, port: int):
        self.port = port
        self.stream: Any = None

    def exchange(self, request: bytes) -> int:
        """Send one request, read its whole response; its status, or 0 if the connection failed."""
        try:
            if self.stream is None:
                self.stream = socket.create_connection(("127.0.0.1", self.port), timeout=30).makefile("rwb")
            self.stream.write(request)
            self.stream.flush()
            status_line = self.stream.readline()
            status = int(status_line.split(b" ", 2)[1])
            length, chunked, close = 0, False, False
            while (line := self.stream.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    close = b"close" in value.lower()
            if chunked:
                while size := int(self.stream.readline().split(b";")[0], 16):
                    self.stream.read(size + 2)
                self.stream.readline()
            else:
                self.stream.read(length)
        except (OSError, ValueError, IndexError):
            self.close()
            return 0
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


def _http_worker(args: tuple[int, str, dict[str, list[tuple[int, str]]], float, int], *, read: bool) -> list[float]:
    """One client over one keep-alive connection: cross-ledger transfers (201 expected) or, with
    ``read``, GET accounts/{number}/ of the source account (200 expected)."""
    port, token, accounts, seconds, seed = args
    ledgers = sorted(accounts)
    rng = random.Random(seed)
    connection = _Connection(port)
    head = f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
    latencies: list[float] = []
    errors: dict[int, int] = {}
    # Every client starts at the window's start, which the CPU figures are measured over (a client
    # that started as soon as its process did would stop before the window ends, and the window's
    # idle tail would read as a door that cannot keep the CPUs busy).
    for due in _arrivals(seed, seconds):
        a, b = rng.sample(ledgers, 2)
        source = rng.choice(accounts[a])[1]
        if read:
            request = f"GET /api/v1/accounts/{source}/ HTTP/1.1\r\n{head}\r\n".encode()
        else:
            body = (
                f'{{"source_account": "{source}", "destination_account": "{rng.choice(accounts[b])[1]}", '
                f'"amount": "{rng.randint(1, 100)}.00", "currency": "CNY"}}'
            )
            request = (
                f"POST /api/v1/transfers/ HTTP/1.1\r\n{head}Content-Type: application/json\r\n"
                f"Idempotency-Key: {uuid.uuid4().hex}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
            ).encode()
        started = time.monotonic() if due is None else due
        status = connection.exchange(request)
        if status == (200 if read else 201):
            latencies.append(time.monotonic() - started)
        else:
            errors[status] = errors.get(status, 0) + 1
    connection.close()
    if errors:
        print(f"  client {seed}: unexpected answers {errors}", file=sys.stderr, flush=True)
    return latencies


def _grouped_engine_worker(args: tuple[dict[str, list[tuple[int, str]]], int, float, int]) -> list[float]:
    """``threads`` clients in one process, each making transfers through group commit: the
    threads of one gunicorn worker, without the door."""
    accounts, threads, seconds, seed = args
    import django

    django.setup()
    from django.conf import settings
    from django.db import connections

    from transfers import group_commit

    settings.GROUP_COMMIT = True
    latencies: list[list[float]] = [[] for _ in range(threads)]
    batches: list[int] = []  # the size of each batch group commit made in this process
    make_batch = group_commit.transfers_create_batch

    def counted(**arguments: Any) -> Any:
        batches.append(len(arguments["items"]))
        return make_batch(**arguments)

    group_commit.transfers_create_batch = counted

    def client(index: int) -> None:
        try:
            latencies[index] = _engine_loop(group_commit.transfer_create, "cross", accounts, seconds, seed + index)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(client, range(threads)))
    made = sum(len(one) for one in latencies)
    print(
        f"  service gc, process {seed}: {sum(batches)} of {made} transfers in {len(batches)} batches "
        f"(mean {sum(batches) / max(len(batches), 1):.1f}), the rest alone",
        flush=True,
    )
    return [latency for one in latencies for latency in one]


def _spread(clients: int, processes: int) -> list[int]:
    """``clients`` threads over at most ``processes`` processes, as evenly as they go."""
    return [count for i in range(processes) if (count := clients // processes + (i < clients % processes))]


def _gunicorn(env: dict[str, str], port: int, workers: int, threads: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **env,
        "DJANGO_SETTINGS_MODULE": "bankcore.settings.production",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(workers),
        "GUNICORN_THREADS": str(threads),
        "GUNICORN_LOG_LEVEL": "warning",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "bankcore.wsgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            connection.getresponse().read()
            return process
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("gunicorn did not start")


def _stack_start(servers: list[MariaDBServer], redis: RedisServer, **environ: str) -> None:
    """Start the servers and Redis, and set this process (and the processes it starts, which
    inherit its environment) up for them: fresh secrets, persistent connections, the throttle out
    of the way, Django set up and the ledgers migrated. ``environ`` adds or overrides variables."""
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda s: s.start(), [*servers, redis]))
    os.environ.update(
        SECRET_KEY=secrets.token_urlsafe(48),
        JWT_SECRET_KEY=secrets.token_urlsafe(48),
        AUDIT_CHAIN_KEY=secrets.token_urlsafe(48),
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(redis.port),
        CONN_MAX_AGE="300",
        # The bench measures the engine behind the door, not the throttle: one partner sends
        # far more than a real one would.
        API_THROTTLE_USER_RATE="10000000/min",
        **environ,
    )
    _configure(servers)
    _create_databases(servers)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate_ledgers", verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--gunicorn-workers", type=int, default=2 * (os.cpu_count() or 1) + 1)
    parser.add_argument("--gunicorn-threads", type=int, default=8)
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every path this many times in turn (each round starting one path later) and report "
        "each round's ratios and their median (this machine's speed drifts between runs; a ratio is only "
        "fair within one round)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="offer this many requests per second in all (Poisson arrivals over the clients, latency "
        "counted from when each was due) instead of a closed loop: the latency below saturation",
    )
    parser.add_argument(
        "--paths",
        default="api,api gc,api read,service,service gc,raw",
        help="which paths to measure, comma-separated, of: api, api gc, api read, service, service gc, raw "
        "(default all). "
        "'--paths api,service --rounds 10 --seconds 5' alternates short windows of the two, so that the "
        "machine's drift falls on both alike",
    )
    plot.add_option(parser)
    args = parser.parse_args()
    n = args.clients
    chosen = [name.strip() for name in args.paths.split(",") if name.strip()]
    known = ("api", "api gc", "api read", "service", "service gc", "raw")
    if not chosen or any(name not in known for name in chosen):
        parser.error(f"--paths: a comma-separated choice of {', '.join(known)}")
    bench_run.RATE_PER_WORKER = args.rate / n

    base = Path(tempfile.mkdtemp(prefix="bankcore-bench-api-"))
    servers = [MariaDBServer(base, f"db{i}", durable=True) for i in (1, 2)]
    redis = RedisServer(base)
    gunicorns: list[subprocess.Popen[bytes]] = []
    try:
        _stack_start(servers, redis)
        _SERVER_PIDS.extend(s.process.pid for s in servers if s.process is not None)
        _SERVER_PORTS.extend(s.port for s in servers)  # purge is waited for before each window
        accounts = _seed_accounts(args.accounts)
        partner = _partner(accounts)
        from django.db import connections

        connections.close_all()
        # Two gunicorns, without and with group commit; the one not measured sits idle.
        ports = {"api": free_port(), "api gc": free_port()}
        for name, port in ports.items():
            if name in chosen:
                environ = {**os.environ, "GROUP_COMMIT": str(name == "api gc").lower()}
                log = base / f"gunicorn-{name.replace(' ', '-')}.log"
                gunicorns.append(_gunicorn(environ, port, args.gunicorn_workers, args.gunicorn_threads, log))
        print(
            f"servers: MariaDB x2 durable, Redis; {args.accounts} accounts; gunicorn production settings, "
            f"{args.gunicorn_workers} workers x {args.gunicorn_threads} threads (gthread), CONN_MAX_AGE=300; "
            f"group commit (api gc, service gc): GROUP_COMMIT_WAIT_MS={os.environ.get('GROUP_COMMIT_WAIT_MS', 2)}, "
            f"GROUP_COMMIT_MAX_ITEMS={os.environ.get('GROUP_COMMIT_MAX_ITEMS', 32)}; "
            f"{n} clients, {args.seconds:.0f}s per run, "
            f"{f'open loop at {args.rate:.0f}/s offered' if args.rate > 0 else 'closed loop'}; {os.cpu_count()} CPUs",
            flush=True,
        )
        # A short warm-up: gunicorn workers import the app and open connections on first use.
        for name, port in ports.items():
            if name in chosen:
                _measure(n, _api_worker, lambda i: (port, _access_token(partner), accounts, 2.0, 10_000 + i))  # noqa: B023

        raw_servers = _raw_servers(servers)
        spread = _spread(n, args.gunicorn_workers)
        # Each path: (processes, worker, its arguments by process).
        runs: dict[str, tuple[int, Callable[..., list[float]], Callable[[int], tuple[Any, ...]]]] = {
            "api": (n, _api_worker, lambda i: (ports["api"], _access_token(partner), accounts, args.seconds, i)),
            "api gc": (
                n,
                _api_worker,
                lambda i: (ports["api gc"], _access_token(partner), accounts, args.seconds, 4000 + i),
            ),
            "api read": (
                n,
                _api_read_worker,
                lambda i: (ports["api"], _access_token(partner), accounts, args.seconds, 3000 + i),
            ),
            "service": (n, _engine_worker, lambda i: ("cross", accounts, args.seconds, 1000 + i)),
            "service gc": (
                len(spread),
                _grouped_engine_worker,
                lambda i: (accounts, spread[i], args.seconds, 5000 + 100 * i),
            ),
            "raw": (n, _raw_worker, lambda i: (raw_servers, accounts, args.seconds, 2000 + i)),
        }
        rounds: list[dict[str, tuple[tuple[float, float, float, int], dict[str, float]]]] = []
        names = [name for name in runs if name in chosen]
        for number in range(max(1, args.rounds)):
            # Each round starts one path later, so that no path always follows the same one (the
            # API right after the raw run's 15,000 transfers, say).
            order = names[number % len(names) :] + names[: number % len(names)]
            measured = {}
            for name in order:
                processes, worker, make_args = runs[name]
                measured[name] = (_measure(processes, worker, make_args), dict(LAST_WINDOW_CPU))
            rounds.append({name: measured[name] for name in names})
        while gunicorns:
            stopping = gunicorns.pop()
            stopping.terminate()
            stopping.wait(timeout=30)

        from transfers.reconciliation import reconcile

        report = reconcile()
        print(
            "\n| path (cross-ledger) | round | clients | requests/s | p50 ms | p99 ms | count | CPU busy "
            "| CPU-ms/request | of which MariaDB | of which HTTP clients |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for number, measured in enumerate(rounds, 1):
            for name, ((rate, p50, p99, count), c) in measured.items():
                # The service and raw workers are the measured work itself; the API's are the load.
                clients = f"{c.get('workers_ms_per_transfer', 0):.2f}" if name.startswith("api") else "-"
                print(
                    f"| {name} | {number} | {n} | {rate:.0f} | {p50:.1f} | {p99:.1f} | {count} | {c.get('busy', 0):.0%} "
                    f"| {c.get('ms_per_transfer', 0):.1f} | {c.get('servers_ms_per_transfer', 0):.1f} | {clients} |"
                )

        def ratio(measured: dict[str, Any], top: str, bottom: str) -> float:
            below = measured[bottom][0][0]
            return measured[top][0][0] / below if below else float("nan")

        def latency(measured: dict[str, Any], name: str) -> str:
            if name not in measured:
                return ""
            return f"; {name} p50 {measured[name][0][1]:.1f} ms, p99 {measured[name][0][2]:.1f} ms"

        print()
        pairs = [
            (top, bottom)
            for top, bottom in (
                ("api", "service"),
                ("api", "raw"),
                ("service", "raw"),
                ("api gc", "raw"),
                ("service gc", "raw"),
                ("api gc", "api"),
                ("service gc", "service"),
            )
            if top in names and bottom in names
        ]
        for number, measured in enumerate(rounds, 1):
            shares = ", ".join(f"{top}/{bottom} {ratio(measured, top, bottom):.2f}" for top, bottom in pairs)
            latencies = "".join(latency(measured, name) for name in ("api", "api gc", "service", "service gc"))
            print(f"round {number}: {shares}{latencies}")
        if "api" in names and "service" in names:
            ratios = [ratio(measured, "api", "service") for measured in rounds]
            p99s = [measured["api"][0][2] for measured in rounds]
            # Over all rounds: every transfer each path made, over the same total time each.
            pooled = sum(m["api"][0][3] for m in rounds) / max(sum(m["service"][0][3] for m in rounds), 1)
            print(f"all rounds pooled: api/service {pooled:.2f} (transfers made in all, each path's windows alike)")
            if args.rate > 0:
                print(
                    f"median of {len(rounds)}: API p99 {statistics.median(p99s):.1f} ms at {args.rate:.0f}/s offered "
                    "(in an open loop every request offered is served, late if it must be: a path that falls behind "
                    "shows it in its latency, not its rate)"
                )
            else:
                print(
                    f"median of {len(rounds)}: api/service {statistics.median(ratios):.2f}, "
                    f"API p99 {statistics.median(p99s):.1f} ms (target: p99 < 100 ms, api/service >= 0.6)"
                )
        if args.plot:
            plot.rates(
                args.plot,
                [
                    (
                        name if len(rounds) == 1 else f"{name}, round {number}",
                        figures[0],
                        ratio(measured, name, "raw") if "raw" in measured else None,
                    )
                    for number, measured in enumerate(rounds, 1)
                    for name, (figures, _) in measured.items()
                ],
                unit="requests/s",
            )
        print(f"reconcile after the run: {'OK' if report.ok else report.discrepancies[:5]}")
    finally:
        for gunicorn in gunicorns:
            gunicorn.terminate()
            gunicorn.wait(timeout=30)
        redis.stop()
        for server in servers:
            server.kill()
        remove_tree(base)


if __name__ == "__main__":
    multiprocessing.set_start_method("fork", force=True)
    main()
