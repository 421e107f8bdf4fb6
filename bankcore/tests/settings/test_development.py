"""`make run`'s embedded default works: every ledger in its own SQLite file, no server.

The rest of the suite runs on MariaDB; this runs what `make run` runs (migrate_ledgers, seed_demo,
the recovery command, the web server) with the development settings in fresh subprocesses, and
moves money through the engine there: a local and a cross-ledger transfer, a replay, a reversal,
a refusal, recovery and reconciliation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from bankcore.testing.servers import free_port

pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, django
django.setup()
from accounts.models import Account
from bankcore.actors import Actor, Channel
from bankcore.errors import ApplicationError
from transfers.reconciliation import reconcile
from transfers.recovery import transfers_recover
from transfers.services import transfer_create, transfer_reverse

actor = Actor.system(Channel.COMMAND, "embedded")
one, two = (Account.objects.using(l).filter(kind="customer").order_by("pk")[:2] for l in ("db1", "db2"))
a, b = list(one); c = two[0]
out = {}
local = transfer_create(actor=actor, source_account=a.number, destination_account=b.number, amount="10.00")
cross = transfer_create(actor=actor, source_account=a.number, destination_account=c.number, amount="12.34",
                        idempotency_key="embedded-1")
again = transfer_create(actor=actor, source_account=a.number, destination_account=c.number, amount="12.34",
                        idempotency_key="embedded-1")
reversal = transfer_reverse(actor=actor, transfer_id=cross.id)
try:
    transfer_create(actor=actor, source_account=b.number, destination_account=c.number, amount="5000.00")
    out["refusal"] = None
except ApplicationError as error:
    out["refusal"] = error.code
out.update(
    local=local.status, cross=cross.status, replayed=again.replayed and again.id == cross.id,
    reversal=reversal.status, recovery_errors=transfers_recover(grace_seconds=0).errors,
    balances=[str(Account.objects.using(x.ledger).get(pk=x.pk).posted) for x in (a, b, c)],
    reconcile=reconcile().discrepancies,
)
print("RESULT " + json.dumps(out))
"""


def _env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB", "REDIS_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="bankcore.settings.development",
        BANKCORE_VAR_DIR=str(var_dir),
        DEMO_PASSWORD="embedded-demo-password",
        LOG_LEVEL="WARNING",
    )
    return env


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_embedded_default_moves_money_without_a_server(tmp_path):
    env = _env(tmp_path)
    for command in (["migrate_ledgers"], ["seed_demo", "--accounts-per-ledger", "2", "--opening-balance", "100.00"]):
        result = _manage(env, *command)
        assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.glob("*.sqlite3")) == ["core.sqlite3", "ledger1.sqlite3", "ledger2.sqlite3"]

    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert (out["local"], out["cross"], out["reversal"]) == ("completed", "completed", "completed")
    assert out["replayed"] is True and out["refusal"] == "insufficient_funds"
    assert out["balances"] == ["90.00", "110.00", "100.00"]
    assert out["recovery_errors"] == [] and out["reconcile"] == []

    recovery = _manage(env, "recover_transfers")
    assert recovery.returncode == 0, recovery.stderr


def test_the_embedded_web_server_answers(tmp_path):
    env = _env(tmp_path)
    assert _manage(env, "migrate_ledgers").returncode == 0
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        env=env,
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    health = json.loads(response.read())
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
                assert time.monotonic() < deadline, "the embedded server did not answer /health"
                time.sleep(0.3)
        assert health["status"] == "ok", health
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=5) as response:
            assert response.status == 200
    finally:
        server.terminate()
        server.wait(timeout=20)
