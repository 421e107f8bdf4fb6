"""The partner API's door in one process: the CPU of a POST /api/v1/transfers/ through the Django
application (WSGI, every middleware, DRF, the view) against ``transfer_create`` called directly,
on the same servers, one request at a time.

    .venv/bin/python bench/door.py [--requests 600] [--rounds 3] [--baseline-tree PATH] [--profile FILE]

``bench/api.py`` measures the door under gunicorn at 32 clients, where the machine's two CPUs are
shared by clients, workers and servers and its speed drifts by a fifth between runs. This one
leaves out gunicorn, HTTP and concurrency and measures the Python of the door alone, as CPU time of
the one process (``time.process_time``): the difference between the two rows is what the door
costs a transfer, and a change to the door shows in it without the noise of the whole machine.

With ``--baseline-tree PATH`` (another checkout, e.g. ``git worktree add /tmp/base <commit>``) each
round measures that tree too, in a process of its own started right after this tree's, on the same
servers and data: two versions of the door compared side by side, which runs minutes apart cannot
do on this machine. Its schema must match this tree's (no migration in between).

Starts two durable MariaDB servers and a Redis (as bench/api.py), the production settings, a
partner linked to every account. Figures, not assertions; every request must succeed, and the books
must reconcile afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _child(state_file: Path, requests: int, profile_to: str = "") -> None:
    """In a tree's own process: warm up, then time the paths in alternating blocks.

    Imports only the application (``bankcore``, ``transfers``) of the tree under test, never its
    ``bench`` package: a baseline checkout's bench may be older or missing, so the request and
    transfer this measures are written here, not taken from ``bench.run``'s workers."""
    state = json.loads(state_file.read_text())
    accounts: dict[str, list[list[Any]]] = state["accounts"]
    token: str = state["token"]
    from bankcore.actors import Actor, Channel
    from bankcore.wsgi import application
    from transfers.services import transfer_create

    ledgers = sorted(accounts)
    rng = random.Random(7)
    statuses: dict[str, int] = {}

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], object]:
        statuses[status] = statuses.get(status, 0) + 1
        return lambda data: None  # WSGI's write(): unused, the handler returns its body

    def pair() -> tuple[str, str]:
        a, b = rng.sample(ledgers, 2)
        return rng.choice(accounts[a])[1], rng.choice(accounts[b])[1]

    def call(method: str, path: str, body: bytes = b"", **headers: str) -> None:
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_AUTHORIZATION": f"Bearer {token}",
            "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
            **headers,
        }
        if body:
            environ.update(CONTENT_TYPE="application/json", CONTENT_LENGTH=str(len(body)))
        result = application(environ, start_response)
        b"".join(result)
        result.close()

    def api() -> None:
        source, destination = pair()
        body = json.dumps(
            {
                "source_account": source,
                "destination_account": destination,
                "amount": f"{rng.randint(1, 100)}.00",
                "currency": "CNY",
            }
        ).encode()
        call("POST", "/api/v1/transfers/", body, HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex)

    def read() -> None:
        call("GET", f"/api/v1/accounts/{pair()[0]}/")

    actor = Actor.system(Channel.API, "bench-door")

    def service() -> None:
        source, destination = pair()
        transfer_create(
            actor=actor,
            source_account=source,
            destination_account=destination,
            amount=f"{rng.randint(1, 100)}.00",
            currency="CNY",
        )

    paths = {"api": api, "api read": read, "service": service}
    for run in paths.values():  # connections, lazy imports, caches
        for _ in range(30):
            run()
    spent = dict.fromkeys(paths, 0.0)
    block = 50
    profiler = cProfile.Profile(time.process_time) if profile_to else None
    for _ in range(max(1, requests // block)):
        for name, run in paths.items():
            started = time.process_time()
            if profiler is not None and name == "api":
                profiler.enable()
            for _ in range(block):
                run()
            if profiler is not None and name == "api":
                profiler.disable()
            spent[name] += time.process_time() - started
    if profiler is not None:
        profiler.dump_stats(profile_to)
    count = max(1, requests // block) * block
    expected = {"201 Created": 30 + count, "200 OK": 30 + count}
    if statuses != expected:
        raise SystemExit(f"unexpected answers: {statuses}, expected {expected}")
    print(json.dumps({name: 1000 * seconds / count for name, seconds in spent.items()}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=600, help="per path, per round and tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--baseline-tree", type=Path, help="another checkout, measured beside this one")
    parser.add_argument(
        "--profile",
        type=Path,
        help="write cProfile stats (CPU clock) of this tree's api path, last round, to this file, and print "
        "the top functions; the profiler's own cost inflates that round's figures",
    )
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    import bench.api as bench_api
    from bankcore.testing.servers import MariaDBServer, RedisServer, remove_tree
    from bench.run import _seed_accounts

    trees = {"this tree": ROOT}
    if args.baseline_tree:
        trees["baseline"] = args.baseline_tree.resolve()
    base = Path(tempfile.mkdtemp(prefix="bankcore-bench-door-"))
    servers = [MariaDBServer(base, f"db{i}", durable=True) for i in (1, 2)]
    redis = RedisServer(base)
    try:
        # One token for the whole run: its longest lifetime.
        bench_api._stack_start(servers, redis, JWT_ACCESS_TOKEN_MINUTES="60")
        from django.db import connections

        accounts = _seed_accounts(args.accounts)
        state = base / "state.json"
        state.write_text(
            json.dumps({"accounts": accounts, "token": bench_api._access_token(bench_api._partner(accounts))})
        )
        connections.close_all()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bankcore.settings.production",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
        }
        print(
            f"servers: MariaDB x2 durable, Redis; {args.accounts} accounts; production settings in one process, "
            f"one request at a time; {args.requests} requests per path, round and tree; {os.cpu_count()} CPUs",
            flush=True,
        )
        print("\n| tree | round | api CPU-ms | service CPU-ms | door (api - service) | api read CPU-ms |")
        print("|---|---|---|---|---|---|")
        doors: dict[str, list[float]] = {name: [] for name in trees}
        for number in range(1, args.rounds + 1):
            for name, tree in trees.items():
                # This file's child code, run in the tree's own directory and import path.
                profiled = args.profile and name == "this tree" and number == args.rounds
                output = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        _CHILD,
                        str(state),
                        str(args.requests),
                        str(args.profile.resolve()) if profiled else "",
                    ],
                    env={**env, "PYTHONPATH": str(tree), "BANKCORE_BENCH_DOOR": str(Path(__file__).resolve())},
                    cwd=tree,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                figures = json.loads(output.stdout.strip().splitlines()[-1])
                door = figures["api"] - figures["service"]
                doors[name].append(door)
                print(
                    f"| {name} | {number} | {figures['api']:.2f} | {figures['service']:.2f} | {door:.2f} "
                    f"| {figures['api read']:.2f} |",
                    flush=True,
                )
        if args.profile:
            import pstats

            print(f"\ncProfile of this tree's api path, round {args.rounds} ({args.profile}):")
            pstats.Stats(str(args.profile), stream=sys.stdout).sort_stats("tottime").print_stats(30)
        print()
        for name, values in doors.items():
            print(f"{name}: door {sorted(values)[len(values) // 2]:.2f} CPU-ms per transfer (median of {len(values)})")
        from transfers.reconciliation import reconcile

        report = reconcile()
        print(f"reconcile after the run: {'OK' if report.ok else report.discrepancies[:5]}")
    finally:
        redis.stop()
        for server in servers:
            server.kill()
        remove_tree(base)


# Run with the tree under test first on the import path; this file's _child measures it.
_CHILD = """
import importlib.util, os, sys
from pathlib import Path
sys.path.insert(0, os.getcwd())
spec = importlib.util.spec_from_file_location("bench_door", os.environ["BANKCORE_BENCH_DOOR"])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module._child(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
"""


if __name__ == "__main__":
    main()
