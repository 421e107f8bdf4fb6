"""Backups as operations runs them: deploy/backup.sh --scheduled (encrypted with age, copied off
the host, pruned to daily/weekly/monthly), and the restore drill: the encrypted backup restored
by deploy/restore.sh into fresh MariaDB servers, where recovery and reconciliation come out
clean and every balance is the one backed up."""

from __future__ import annotations

import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import MySQLdb
import pytest
from django.conf import settings
from django.db import connections

from bankcore.actors import Actor, Channel
from bankcore.testing.native import tool
from bankcore.testing.plugin import ledger_servers
from bankcore.testing.processes import subprocess_env
from bankcore.testing.servers import MariaDBServer
from transfers.services import transfer_create

ROOT = Path(settings.BASE_DIR)


def script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", *args],
        env=subprocess_env(PYTHON=sys.executable, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def age_key(directory: Path) -> tuple[Path, str]:
    key = directory / "bankcore-backup.key"
    subprocess.run([tool("age-keygen"), "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run([tool("age-keygen"), "-y", str(key)], check=True, capture_output=True, text=True)
    return key, public.stdout.strip()


def books(connect) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    """Every account of every ledger: number, posted, pending debits and credits."""
    rows = []
    for alias in settings.LEDGERS:
        connection = connect(alias)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT number, posted, pending_debits, pending_credits FROM accounts_account ORDER BY number"
            )
            rows += list(cursor.fetchall())
    return sorted(rows)


def start_fresh_servers(directory: Path, count: int) -> list[MariaDBServer]:
    servers = [MariaDBServer(directory, f"fresh{n}") for n in range(1, count + 1)]
    errors: list[BaseException] = []

    def start(server: MariaDBServer) -> None:
        try:
            server.start()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        for server in servers:
            server.stop()
        raise errors[0]
    return servers


@pytest.mark.slow
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_restore_drill_into_fresh_servers(tmp_path, make_account, ledgers):
    if not ledger_servers():
        pytest.skip("needs the MariaDB servers the test plugin starts")
    # given money moved inside and across ledgers
    accounts = [make_account(alias, "500.00") for alias in ledgers]
    actor = Actor.system(Channel.COMMAND, "restore-drill")
    for source, destination in zip(accounts, accounts[1:] + accounts[:1], strict=True):
        transfer_create(
            actor=actor, source_account=source.number, destination_account=destination.number, amount="12.34"
        )
    before = books(lambda alias: connections[alias])
    connections.close_all()

    # when the scheduled backup runs: encrypted, copied off the host
    key, public = age_key(tmp_path)
    backups, offsite = tmp_path / "backups", tmp_path / "offsite"
    offsite.mkdir()
    backup = script(
        "deploy/backup.sh",
        "--native",
        "--scheduled",
        BACKUP_ROOT=str(backups),
        BACKUP_AGE_RECIPIENTS=public,
        BACKUP_RSYNC_TARGET=str(offsite),
    )
    assert backup.returncode == 0, backup.stderr
    directory = Path(backup.stdout.strip().splitlines()[-1])
    dumps = sorted(directory.glob("*.sql.gz.age"))
    assert [d.name.split("__")[0] for d in dumps] == sorted([*ledgers, "default"])
    assert not list(directory.glob("*.sql.gz")) and not list(directory.glob("*.binlog"))
    for dump in dumps:
        assert dump.read_bytes().startswith(b"age-encryption.org/v1")
        assert b"INSERT INTO" not in dump.read_bytes()
    assert "encrypted=age" in (directory / "backup.info").read_text().splitlines()
    copy = offsite / directory.name
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in directory.iterdir())
    assert (copy / "SHA256SUMS").read_bytes() == (directory / "SHA256SUMS").read_bytes()

    # and fresh servers are started, with empty databases of the same names
    names = {alias: connections[alias].settings_dict["NAME"] for alias in ["default", *ledgers]}
    servers = start_fresh_servers(tmp_path / "fresh", len(ledgers))
    try:
        env: dict[str, str] = {}
        for n, (alias, server) in enumerate(zip(ledgers, servers, strict=True), start=1):
            env.update(server.env(f"DB{n}", names[alias]))
        env.update(servers[0].env("DB_DEFAULT", names["default"]))
        for alias, server in [("default", servers[0]), *zip(ledgers, servers, strict=True)]:
            connection = MySQLdb.connect(host="127.0.0.1", port=server.port, user="root", passwd="")
            connection.cursor().execute(
                f"CREATE DATABASE `{names[alias]}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
            connection.close()

        # then a restore without the private key is refused before anything is touched
        refused = script("deploy/restore.sh", str(directory), "--force", "--native", **env)
        assert refused.returncode != 0 and "set BACKUP_AGE_IDENTITY" in refused.stderr
        probe = MySQLdb.connect(host="127.0.0.1", port=servers[0].port, user="root", passwd="")
        with probe.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s", [names["db1"]])
            assert cursor.fetchone()[0] == 0
        probe.close()

        # and with it, the restore recovers, reconciles clean, and the books are the ones backed up
        restored = script("deploy/restore.sh", str(copy), "--force", "--native", BACKUP_AGE_IDENTITY=str(key), **env)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert "reconciliation is clean" in restored.stderr

        def fresh(alias: str):
            server = servers[ledgers.index(alias)]
            return MySQLdb.connect(host="127.0.0.1", port=server.port, user="root", passwd="", db=names[alias])

        assert books(fresh) == before
    finally:
        for server in servers:
            server.stop()


def test_retention_keeps_daily_weekly_and_monthly_backups(tmp_path):
    names = [
        "20261207T020000Z",  # newest: kept (day, ISO week 50, month 12)
        "20261207T010000Z",  # same day, week and month: deleted
        "20261206T020000Z",  # second day; week 49: kept
        "20261205T020000Z",  # daily quota full, week 49 and month 12 taken: deleted
        "20261130T020000Z",  # week 49 taken, month 11: kept
        "20261129T020000Z",  # week 48, the third week: kept
        "20261115T020000Z",  # weekly quota full, month 11 taken: deleted
        "20261020T020000Z",  # month 10, the third month: kept
        "20260901T020000Z",  # monthly quota full: deleted
    ]
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "SHA256SUMS").write_text("")
    (tmp_path / "20260101T000000Z").mkdir()  # incomplete (no SHA256SUMS): left alone
    (tmp_path / "notes").mkdir()  # not a backup: left alone

    result = script(
        "deploy/backup.sh",
        "--prune",
        BACKUP_ROOT=str(tmp_path),
        BACKUP_KEEP_DAILY="2",
        BACKUP_KEEP_WEEKLY="3",
        BACKUP_KEEP_MONTHLY="3",
    )

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "20261207T020000Z",
            "20261206T020000Z",
            "20261130T020000Z",
            "20261129T020000Z",
            "20261020T020000Z",
            "20260101T000000Z",
            "notes",
        ]
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "--scheduled needs BACKUP_AGE_RECIPIENTS"),
        ({"BACKUP_AGE_RECIPIENTS": "ssh-rsa AAAA"}, "is not an age public key"),
    ],
)
def test_a_scheduled_backup_is_encrypted_or_not_made(tmp_path, env, message):
    result = script("deploy/backup.sh", "--native", "--scheduled", BACKUP_ROOT=str(tmp_path / "b"), **env)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "b").exists()


def test_the_backup_timer_runs_the_scheduled_backup():
    import configparser

    units = {}
    for name in ("bankcore-backup.service", "bankcore-backup.timer"):
        parser = configparser.ConfigParser(strict=True, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string((ROOT / "deploy" / "systemd" / name).read_text())
        units[name] = parser
    service, timer = units["bankcore-backup.service"], units["bankcore-backup.timer"]
    assert service["Service"]["ExecStart"] == "@ROOT@/deploy/backup.sh --scheduled"
    assert service["Service"]["Type"] == "oneshot"
    assert timer["Timer"]["Persistent"] == "true" and timer["Install"]["WantedBy"] == "timers.target"
    assert "@ROOT@" in (ROOT / "deploy" / "deploy.sh").read_text()
