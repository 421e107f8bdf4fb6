"""Throwaway MariaDB/MySQL and Redis servers for the test suite and the benchmark.

Each server gets its own data directory and a free port on 127.0.0.1, and is started with
``--no-defaults`` so the machine's /etc/mysql configuration cannot leak in. Tests can ``kill()``
(SIGKILL, as a crash) and ``start()`` again on the same port and data.

Measured on the 2-core CI machine: ``mariadb-install-db`` ≈ 1.2 s, start ≈ 0.6–1.7 s, restart
after kill -9 ≈ 0.4–1.4 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A port free now and not handed out before by this process: the OS may give a port it just
    gave again, since nothing is bound to it until its server starts, and two servers started at
    once must not share one."""
    with _handed_out_lock:
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def _which(*names: str) -> str:
    for name in names:
        for directory in (
            "/usr/sbin",
            "/usr/bin",
            "/usr/local/sbin",
            "/usr/local/bin",
            *os.environ.get("PATH", "").split(":"),
        ):
            candidate = Path(directory) / name
            if candidate.exists():
                return str(candidate)
    raise RuntimeError(f"none of {names} is installed; run `make test` (it installs mariadb-server and redis-server)")


# UTC and the project's TIME_ZONE (bankcore/settings/base.py; bankcore/tests/test_db.py checks).
TIME_ZONES = ("UTC", "Asia/Shanghai")
# The two users a deployment has (deploy/mysql): the application's, which holds only what
# `migrate_ledgers` grants it (bankcore.privileges), and the migrator's (DDL, GRANT OPTION).
APP_USER, APP_PASSWORD = "bank_user", "app-password"
MIGRATE_USER, MIGRATE_PASSWORD = "bank_migrator", "migrate-password"


class MariaDBServer:
    # Tests: flush the redo log at commit to the OS, not the disk. A killed server process loses
    # nothing that way (only an OS crash would), and fsync-bound tests run several times faster.
    # The benchmark passes durable=True for the production settings.
    def __init__(
        self,
        base_dir: Path,
        name: str,
        *,
        durable: bool = False,
        port: int | None = None,
        options: tuple[str, ...] = (),
    ):
        self.name = name
        self.options = options  # further mariadbd options (TLS tests: --ssl-cert …)
        self.dir = Path(base_dir) / name
        self.tmpdir = self.dir / "tmp"
        self.datadir = self.dir / "data"
        self.socket = self.dir / "mysqld.sock"
        self.log = self.dir / "mysqld.log"
        self.port = port or free_port()
        self.durable = durable
        self.process: subprocess.Popen[bytes] | None = None

    def _install(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        command = [
            _which("mariadb-install-db", "mysql_install_db"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if os.geteuid() == 0:
            command.append("--user=root")
        for _attempt in range(3):
            result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if result.returncode == 0:
                return
            shutil.rmtree(self.datadir, ignore_errors=True)
        raise RuntimeError(f"mariadb-install-db failed for {self.name}:\n{result.stdout[-3000:]}")

    def start(self, timeout: float = 60.0) -> None:
        fresh = not self.datadir.exists()
        if fresh:
            self._install()
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        command = [
            _which("mariadbd", "mysqld"),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            f"--socket={self.socket}",
            f"--pid-file={self.dir / 'mysqld.pid'}",
            f"--log-error={self.log}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--transaction-isolation=READ-COMMITTED",
            "--max-connections=500",
            "--innodb-buffer-pool-size=256M",
            "--innodb-lock-wait-timeout=5",
            # Its own temporary directory: internal temporary tables (information_schema queries,
            # sorts) live there, and a server whose file another process removed from a shared
            # /tmp fails the query or crashes.
            f"--tmpdir={self.tmpdir}",
        ]
        if self.durable:
            command += [
                "--innodb-flush-log-at-trx-commit=1",
                "--sync-binlog=1",
                f"--log-bin={self.dir / 'binlog'}",
                "--binlog-format=ROW",
                f"--server-id={self.port}",
            ]
        else:
            command += ["--innodb-flush-log-at-trx-commit=2", "--skip-log-bin"]
        command += self.options
        if os.geteuid() == 0:
            command.append("--user=root")
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_ready(timeout)
        if fresh:
            self._load_time_zones()
            self._create_users()

    def _create_users(self) -> None:
        """The application's and the migrator's users. The migrator may do anything on any
        database (the suite's are named by Django's test runner); the application's holds nothing
        until ``migrate_ledgers`` grants it its tables."""
        self.sql(
            f"CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'; "
            f"CREATE USER '{MIGRATE_USER}'@'%' IDENTIFIED BY '{MIGRATE_PASSWORD}'; "
            f"GRANT ALL PRIVILEGES ON *.* TO '{MIGRATE_USER}'@'%' WITH GRANT OPTION;"
        )

    def sql(self, statements: str) -> None:
        """Run ``statements`` as root with the command-line client."""
        result = subprocess.run(
            [_which("mariadb", "mysql"), "--no-defaults", "-uroot", "-h127.0.0.1", f"-P{self.port}"],
            input=statements,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: {statements!r} failed: {result.stderr[-2000:]}")

    def _load_time_zones(self) -> None:
        """The named time zones Django's MySQL backend converts with (CONVERT_TZ from 'UTC' to
        TIME_ZONE: the admin's date hierarchy, date lookups), as a production server has them (the
        official MySQL and MariaDB images load them at initialisation). Without them, every
        changelist with a date hierarchy and rows failed: "Database returned an invalid datetime
        value". Only these two zones, from the system's zoneinfo: 8 kB of SQL, not the whole 3 MB."""
        sql = "".join(
            subprocess.run(
                [_which("mariadb-tzinfo-to-sql", "mysql_tzinfo_to_sql"), f"/usr/share/zoneinfo/{zone}", zone],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for zone in TIME_ZONES
        )
        # Retried: once in many CI runs the client failed (exit 1) on a server that had just
        # answered _wait_ready; the error it printed is kept for the report.
        for attempt in range(3):
            loaded = subprocess.run(
                [_which("mariadb", "mysql"), "--no-defaults", "-uroot", "-h127.0.0.1", f"-P{self.port}", "mysql"],
                input=sql,
                capture_output=True,
                text=True,
            )
            if loaded.returncode == 0:
                return
            time.sleep(0.5 * (attempt + 1))
        raise RuntimeError(
            f"{self.name}: loading the time zones failed (exit {loaded.returncode}): "
            f"{(loaded.stderr or loaded.stdout)[-2000:]}\nsee {self.log}:\n{self._log_tail()}"
        )

    def _wait_ready(self, timeout: float) -> None:
        import MySQLdb

        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}; see {self.log}:\n{self._log_tail()}"
                )
            try:
                connection = MySQLdb.connect(
                    host="127.0.0.1", port=self.port, user="root", passwd="", connect_timeout=1
                )
                try:
                    cursor = connection.cursor()
                    cursor.execute("SELECT @@datadir")
                    (datadir,) = cursor.fetchone()
                finally:
                    connection.close()
                # Another server on this port (one that took it first) is not this one.
                if Path(str(datadir)).resolve() == self.datadir.resolve():
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: port {self.port} answers for another server ({datadir})")
                time.sleep(0.1)
            except MySQLdb.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} not ready after {timeout}s; see {self.log}:\n{self._log_tail()}"
                    ) from None
                time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to flush or roll back."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def env(self, prefix: str, database: str) -> dict[str, str]:
        return {
            f"{prefix}_HOST": "127.0.0.1",
            f"{prefix}_PORT": str(self.port),
            f"{prefix}_USER": "root",
            f"{prefix}_PASSWORD": "",
            f"{prefix}_NAME": database,
        }


class RedisServer:
    def __init__(self, base_dir: Path, port: int | None = None):
        self.dir = Path(base_dir) / "redis"
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                _which("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
