"""pytest plugin (loaded with ``-p bankcore.testing.plugin`` from setup.cfg): starts one real
MariaDB server per ledger and a Redis server before Django reads its settings, and points the
DB1_…/DB2_…/REDIS_… variables at them. ``BANKCORE_TEST_LEDGERS`` (default 2) says how many
ledgers; ``BANKCORE_TEST_EXTERNAL=1`` uses the servers the environment already names instead.
"""

from __future__ import annotations

import os
import signal
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypedDict

import pytest

from bankcore.testing.servers import MariaDBServer, RedisServer, remove_tree

LEDGER_DATABASES = {1: "bank_source", 2: "bank_dest"}


class Started(TypedDict, total=False):
    """What this run started: its directory, a server per ledger, and Redis."""

    base: Path
    ledgers: list[MariaDBServer]
    redis: RedisServer


STARTED: Started = {}


def ledger_servers() -> list[MariaDBServer]:
    return list(STARTED.get("ledgers", []))


def redis_server() -> RedisServer | None:
    return STARTED.get("redis")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bankcore.settings.test")
    if os.environ.get("BANKCORE_TEST_EXTERNAL") == "1" or "--help" in args or "--version" in args:
        return
    count = int(os.environ.get("BANKCORE_TEST_LEDGERS", "2"))
    reap_abandoned_servers()
    base = Path(tempfile.mkdtemp(prefix="bankcore-test-"))
    (base / OWNER_FILE).write_text(str(os.getpid()))
    servers = [MariaDBServer(base, f"db{n}") for n in range(1, count + 1)]
    redis = RedisServer(base)
    with ThreadPoolExecutor(max_workers=count + 1) as pool:
        for future in [pool.submit(server.start) for server in servers] + [pool.submit(redis.start)]:
            future.result()
    STARTED.update(Started(base=base, ledgers=servers, redis=redis))
    for n, server in enumerate(servers, start=1):
        os.environ.update(server.env(f"DB{n}", LEDGER_DATABASES.get(n, f"bank_ledger{n}")))
    os.environ.update(REDIS_HOST="127.0.0.1", REDIS_PORT=str(redis.port), BANKCORE_VAR_DIR=str(base / "var"))


def pytest_unconfigure(config: pytest.Config) -> None:
    for server in ledger_servers():
        server.kill()
    redis = redis_server()
    if redis:
        redis.stop()
    base = STARTED.get("base")
    if isinstance(base, Path) and not os.environ.get("BANKCORE_TEST_KEEP"):
        remove_tree(base)
    elif isinstance(base, Path):
        (base / OWNER_FILE).unlink(missing_ok=True)  # kept on purpose: not for the reaper


OWNER_FILE = "owner.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_abandoned_servers() -> None:
    """Kill the servers of earlier test runs that died without cleaning up (a run killed by a
    timeout, CI cancelled) and remove their directories: otherwise each such run leaves MariaDB and
    Redis servers running on the machine for good. A run's directory names its pytest process
    (``owner.pid``); it is abandoned when that process is gone."""
    for base in Path(tempfile.gettempdir()).glob("bankcore-test-*"):
        try:
            owner = int((base / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        marker = str(base)
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                # mariadbd names its data directory on its command line; redis-server rewrites its
                # command line but works in its --dir.
                if marker.encode() in (proc / "cmdline").read_bytes() or os.readlink(proc / "cwd").startswith(marker):
                    os.kill(int(proc.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue
        remove_tree(base)
