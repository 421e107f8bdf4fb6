"""Chaos benchmark: server faults at random against gunicorn and the recovery worker, for minutes.

    .venv/bin/python bench/chaos.py --minutes 30 [--clients 4] [--rate 20] [--recovery loop|celery]

Starts two durable MariaDB servers and a Redis (as bench/api.py), seeds funded accounts linked to
one partner, then runs the app as production does, each a process of its own: gunicorn with the
production settings and deploy/gunicorn.conf.py, and the recovery worker (``manage.py
recover_transfers --loop``, or with ``--recovery celery`` a Celery worker and beat). Partner
clients on loopback post cross-ledger transfers at a bounded rate, each under an Idempotency-Key
of its own, retried under it after a 5xx or no answer. Meanwhile, one after another at random:

  SIGKILL + restart (same port, same data) of db1 (the control plane and the first ledger),
  of db2 (a ledger only), or of Redis; SIGSTOP of a ledger server past the lock wait timeout,
  then SIGCONT.

Just before each database fault, two coordinators die mid-transfer (fault points) and leave their
transfers to the recovery worker. The app's processes are never restarted or told anything.

One line per fault while it runs. At the end: requests, faults, the 5xx (and unanswered) count,
the heal times (from the server answering again to the first request after that which succeeded:
p50 and max), the requests that still failed HEAL_BOUND seconds after a server's return, the
transfers left pending past TRANSACTION_TIMEOUT + RECOVERY_INTERVAL_SECONDS after it, and the
verdict on the invariants (conservation, nothing pending, every key answered, reconcile clean).
Figures and a verdict; exit status 1 when the verdict is not OK.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench.api as bench_api  # noqa: E402
from bankcore.testing.chaos import (  # noqa: E402
    HEAL_BOUND,
    DyingCoordinators,
    Fault,
    PartnerLoad,
    books_read,
    heal_time,
    kill_and_restart,
    late_failures,
    outcomes,
    percentile,
    requests_check,
    server_errors,
    settle_time,
    stop_and_continue,
    transfers_unfinished,
)
from bankcore.testing.servers import MariaDBServer, RedisServer, free_port, remove_tree  # noqa: E402
from bench.run import OPENING, _seed_accounts  # noqa: E402

SLACK = 2.0  # a recovery pass's own time and the reading of the books, on a busy machine


def _recovery_processes(
    kind: str, env: dict[str, str], interval: int, directory: Path
) -> list[subprocess.Popen[bytes]]:
    def start(name: str, command: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=(directory / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    if kind == "loop":
        return [
            start("recovery", [sys.executable, "manage.py", "recover_transfers", "--loop", "--interval", str(interval)])
        ]
    return [
        start(
            "celery-worker", [sys.executable, "-m", "celery", "-A", "bankcore", "worker", "-l", "warning", "-c", "1"]
        ),
        start(
            "celery-beat",
            [sys.executable, "-m", "celery", "-A", "bankcore", "beat", "-l", "warning", "-s", str(directory / "beat")],
        ),
    ]


def _workers(master: int) -> set[int]:
    return {int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, required=True, help="how long to inject faults")
    parser.add_argument("--clients", type=int, default=4, help="partner client threads")
    parser.add_argument("--rate", type=float, default=20.0, help="new transfers per second, all clients together")
    parser.add_argument("--accounts", type=int, default=200, help="funded accounts, split over the two ledgers")
    parser.add_argument("--seed", type=int, default=1, help="the faults' and the clients' random seed")
    parser.add_argument("--transaction-timeout", type=int, default=5, help="TRANSACTION_TIMEOUT for the app, seconds")
    parser.add_argument("--recovery-interval", type=int, default=1, help="RECOVERY_INTERVAL_SECONDS for the app")
    parser.add_argument("--lock-wait-timeout", type=int, default=5, help="MYSQL_LOCK_WAIT_TIMEOUT for the app")
    parser.add_argument(
        "--recovery",
        choices=("loop", "celery"),
        default="loop",
        help="the recovery worker: manage.py recover_transfers --loop, or a Celery worker and beat",
    )
    args = parser.parse_args()
    if args.minutes <= 0 or args.clients < 1 or args.rate <= 0 or args.accounts < 8:
        parser.error("--minutes and --rate must be positive, --clients at least 1, --accounts at least 8")
    rng = random.Random(args.seed)
    settle = args.transaction_timeout + args.recovery_interval + SLACK

    base = Path(tempfile.mkdtemp(prefix="bankcore-bench-chaos-"))
    servers = [MariaDBServer(base, f"db{i}", durable=True) for i in (1, 2)]
    redis = RedisServer(base)
    processes: list[subprocess.Popen[bytes]] = []
    dying: DyingCoordinators | None = None
    load: PartnerLoad | None = None
    try:
        bench_api._stack_start(
            servers,
            redis,
            TRANSACTION_TIMEOUT=str(args.transaction_timeout),
            RECOVERY_INTERVAL_SECONDS=str(args.recovery_interval),
            MYSQL_LOCK_WAIT_TIMEOUT=str(args.lock_wait_timeout),
            DAILY_TRANSFER_LIMIT="1000000000.00",
            # every worker's pids are compared at the end: none may have been replaced
            GUNICORN_MAX_REQUESTS="0",
        )
        from django.db import connections

        seeded = _seed_accounts(args.accounts)
        # The first account of each ledger is the dying coordinators'; the partner uses the rest.
        crash_source, crash_destination = seeded["db1"][0][1], seeded["db2"][0][1]
        accounts = {ledger: [number for _, number in rows[1:]] for ledger, rows in seeded.items()}
        partner = bench_api._partner({ledger: rows[1:] for ledger, rows in seeded.items()})
        opening = {number: OPENING for numbers in accounts.values() for number in numbers}
        before = books_read()
        connections.close_all()

        port = free_port()
        gunicorn = bench_api._gunicorn(dict(os.environ), port, 2, 4, base / "gunicorn.log")
        processes.append(gunicorn)
        app_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bankcore.settings.production", "ALLOWED_HOSTS": "127.0.0.1"}
        processes += _recovery_processes(args.recovery, app_env, args.recovery_interval, base)
        workers = _workers(gunicorn.pid)
        dying = DyingCoordinators(env={**os.environ, "BANKCORE_FAULT_POINTS_ENABLED": "true"})

        print(
            f"chaos: {args.minutes:g} min; MariaDB x2 durable, Redis; gunicorn production settings, 2 workers x 4 "
            f"threads; recovery: {args.recovery}; {args.clients} partner clients at {args.rate:g} transfers/s; "
            f"TRANSACTION_TIMEOUT={args.transaction_timeout}, RECOVERY_INTERVAL_SECONDS={args.recovery_interval}, "
            f"lock wait {args.lock_wait_timeout} s; {os.cpu_count()} CPUs",
            flush=True,
        )
        load = PartnerLoad(
            url=f"http://127.0.0.1:{port}",
            token=lambda: bench_api._access_token(partner),
            accounts=accounts,
            clients=args.clients,
            rate=args.rate,
            seed=args.seed,
        )
        started = time.monotonic()
        load.start()
        faults: list[Fault] = []
        heals: dict[str, list[float]] = defaultdict(list)
        unhealed: list[str] = []
        settle_times: list[float] = []
        late_total = 0
        left: list[str] = []
        time.sleep(5)
        end = started + args.minutes * 60
        while time.monotonic() < end:
            choice = rng.choice(("kill db1", "kill db2", "kill redis", "stop"))
            if choice != "kill redis":
                for at in ("after_accept_prepare", "after_decide_credit"):
                    dying.transfer(source=crash_source, destination=crash_destination, amount="1.00", at=at)
            if choice == "kill db1":
                fault = kill_and_restart(servers[0], target="db1", down=rng.uniform(1, 4))
            elif choice == "kill db2":
                fault = kill_and_restart(servers[1], target="db2", down=rng.uniform(1, 4))
            elif choice == "kill redis":
                fault = kill_and_restart(redis, target="Redis", down=rng.uniform(1, 4))
            else:
                victim = rng.choice((0, 1))
                seconds = rng.uniform(args.lock_wait_timeout + 1, args.lock_wait_timeout + 4)
                fault = stop_and_continue(servers[victim], target=f"db{victim + 1}", seconds=seconds)
            faults.append(fault)
            settled, pending = settle_time(fault, bound=settle)
            if settled is not None:
                settle_times.append(settled)
            new = [what for what in pending if what not in left]
            left += new
            # the load carries on until the next fault, after a calm of random length
            time.sleep(max(0.0, fault.back + HEAL_BOUND + rng.uniform(2, 10) - time.monotonic()))
            attempts = load.attempts()
            healed = heal_time(fault, attempts)
            late = late_failures(fault, attempts, until=time.monotonic())
            late_total += len(late)
            if healed is None:
                unhealed.append(fault.name)
            else:
                heals[fault.name].append(healed)
            during = server_errors(a for a in attempts if fault.injected <= a.started < fault.back + HEAL_BOUND)
            print(
                f"[{(time.monotonic() - started) / 60:5.1f} min] fault {len(faults)}: {fault.name}, away "
                f"{fault.back - fault.injected:.1f} s; healed in {'-' if healed is None else f'{healed:.2f} s'}; "
                f"5xx/unanswered {during}; late failures {len(late)}; its pending settled in "
                f"{'-' if settled is None else f'{settled:.2f} s'} ({len(new)} left past the bound); "
                f"{len(attempts)} requests so far",
                flush=True,
            )
        load.stop()
        stopped = datetime.now(UTC)
        connections.close_all()
        deadline = time.monotonic() + settle
        while (after_load := transfers_unfinished(created_before=stopped)) and time.monotonic() < deadline:
            time.sleep(0.5)
        elapsed = (time.monotonic() - started) / 60

        attempts = load.attempts()
        requests = load.snapshot()
        all_heals = [h for values in heals.values() for h in values]
        after = books_read()
        problems = requests_check(requests, opening=opening)
        exited = [p.args for p in processes if p.poll() is not None]
        replaced = _workers(gunicorn.pid) != workers if gunicorn.poll() is None else True
        reconciled = subprocess.run(
            [sys.executable, "manage.py", "reconcile", "--no-progress"], cwd=ROOT, capture_output=True, text=True
        )
        kinds: defaultdict[str, int] = defaultdict(int)
        for fault in faults:
            kinds[fault.name] += 1
        print()
        print(f"{elapsed:.1f} min, {len(faults)} faults ({', '.join(f'{n}: {c}' for n, c in sorted(kinds.items()))})")
        print(
            f"requests: {len(attempts)} for {len(requests)} transfers; 5xx or unanswered: {server_errors(attempts)}; "
            f"still failing {HEAL_BOUND:g} s after a server's return: {late_total}"
        )
        print(f"answers: {outcomes(attempts)}")
        if all_heals:
            print(
                f"heal time (server answering again -> first successful request): p50 "
                f"{statistics.median(all_heals):.2f} s, p90 {percentile(all_heals, 0.9):.2f} s, "
                f"max {max(all_heals):.2f} s over {len(all_heals)} faults; not healed: {len(unhealed)}"
            )
            for name, values in sorted(heals.items()):
                print(f"  {name}: p50 {statistics.median(values):.2f} s, max {max(values):.2f} s ({len(values)})")
        if settle_times:
            print(
                f"pending settled (server answering again -> nothing left of what its outage left pending): p50 "
                f"{statistics.median(settle_times):.2f} s, max {max(settle_times):.2f} s over {len(settle_times)} faults"
            )
        print(
            f"left pending past TRANSACTION_TIMEOUT + RECOVERY_INTERVAL_SECONDS (+{SLACK:g} s) after a return: "
            f"{len(left)}; after the load stopped: {len(after_load)}"
        )
        verdict = {
            "conservation": after.posted == before.posted,
            "nothing pending": not after.pending and not after_load,
            "no overdraft": not after.overdrawn,
            "keys answered, acknowledged transfers final, balances explained": not problems,
            "reconcile": reconciled.returncode == 0,
            "processes never restarted": not exited and not replaced,
            "healed within bounds": not unhealed and not late_total and not left,
        }
        print(f"Σ posted before {before.posted}, after {after.posted}; pending {after.pending}")
        for line in problems[:10]:
            print(f"  - {line}")
        if reconciled.returncode:
            print(reconciled.stdout[-3000:])
        if exited or replaced:
            print(f"  exited: {exited}; gunicorn workers replaced: {replaced}")
        print(
            "verdict: "
            + ("OK" if all(verdict.values()) else "NOT OK")
            + " ("
            + ", ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in verdict.items())
            + ")",
            flush=True,
        )
        if not all(verdict.values()):
            raise SystemExit(1)
    finally:
        if load is not None:
            load.stop(timeout=5)
        if dying is not None:
            dying.close()
        for process in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        redis.stop()
        for server in servers:
            server.kill()
        remove_tree(base)


if __name__ == "__main__":
    main()
