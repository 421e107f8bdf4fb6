"""TLS inside the deployment: the app to MariaDB/MySQL (DB_SSL_…) and to Redis (REDIS_TLS…),
on loopback against servers that refuse plaintext, with a throwaway CA made by openssl. The
settings are read in a child process, as a container reads them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from bankcore.env import mysql_tls_options, redis_tls_options
from bankcore.testing.native import tool
from bankcore.testing.paths import ROOT
from bankcore.testing.servers import MariaDBServer, RedisServer, free_port


def openssl(*args: str) -> None:
    subprocess.run([tool("openssl"), *args], check=True, capture_output=True, timeout=60)


def certificate_authority(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    ca, key = directory / f"{name}.crt", directory / f"{name}.key"
    openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=bankcore test {name}"),
        *("-keyout", str(key), "-out", str(ca)),
    )
    return ca, key


def server_certificate(directory: Path, ca: Path, ca_key: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by the CA."""
    certificate, key, request = directory / "server.crt", directory / "server.key", directory / "server.csr"
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(request))
    extensions = directory / "san.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        *("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial"),
        *("-days", "2", "-extfile", str(extensions), "-out", str(certificate)),
    )
    key.chmod(0o644)  # the servers run as this user; nothing else reads the test directory
    return certificate, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca, ca_key = certificate_authority(directory)
    other_ca, _ = certificate_authority(directory, "other-ca")
    certificate, key = server_certificate(directory, ca, ca_key)
    return {"ca": ca, "other_ca": other_ca, "certificate": certificate, "key": key}


def settings_child(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` after django.setup() with only these variables (none of the suite's servers)."""
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        env={
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "bankcore.settings.test",
            **env,
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


SSL_CIPHER = """
from django.db import connections
for alias in ("default", "db1"):
    with connections[alias].cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        print(alias, cursor.fetchone()[1] or "PLAINTEXT")
"""


def test_the_app_reaches_mariadb_over_verified_tls_only(tmp_path, pki):
    server = MariaDBServer(
        tmp_path,
        "tls",
        options=(
            f"--ssl-ca={pki['ca']}",
            f"--ssl-cert={pki['certificate']}",
            f"--ssl-key={pki['key']}",
        ),
    )
    # Plaintext is refused once the server is up (its readiness probe connects without TLS).
    server.start()
    try:
        base = {**server.env("DB1", "bank_source"), "DB_DEFAULT_NAME": "bank_core"}
        subprocess.run(
            [
                "mariadb",
                f"--socket={server.socket}",
                "-uroot",
                "-e",
                "CREATE DATABASE bank_source; CREATE DATABASE bank_core; SET GLOBAL require_secure_transport = ON",
            ],
            check=True,
            capture_output=True,
        )

        # with the CA: TLS, the server's name verified, on the control plane and the ledger
        verified = settings_child(SSL_CIPHER, **base, DB_SSL_CA=str(pki["ca"]))
        assert verified.returncode == 0, verified.stderr
        ciphers = dict(line.split() for line in verified.stdout.splitlines())
        assert set(ciphers) == {"default", "db1"} and "PLAINTEXT" not in ciphers.values()

        # without TLS options the server refuses the connection: it requires secure transport
        # (MariaDB answers such a login with "Access denied")
        plain = settings_child(SSL_CIPHER, **base)
        assert plain.returncode != 0 and "access denied" in plain.stderr.lower(), plain.stdout

        # a certificate from another CA is refused by the client
        wrong = settings_child(SSL_CIPHER, **base, DB_SSL_CA=str(pki["other_ca"]))
        assert wrong.returncode != 0 and "certificate" in wrong.stderr.lower(), wrong.stderr[-2000:]
    finally:
        server.stop()


REDIS_ROUND_TRIP = """
from django.core.cache import cache
from bankcore.celery import app
from bankcore.health import _check_redis
cache.set("tls-probe", "through TLS", 30)
print(cache.get("tls-probe"))
with app.connection_for_write() as connection:
    connection.ensure_connection(max_retries=1)
    print("broker", connection.as_uri())
print("health", _check_redis()["status"])
"""


def test_the_app_reaches_redis_over_verified_tls(tmp_path, pki):
    port = free_port()
    redis = RedisServer(tmp_path)
    redis.dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            tool("redis-server"),
            *("--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(pki["certificate"]), "--tls-key-file", str(pki["key"])),
            *("--tls-ca-cert-file", str(pki["ca"]), "--tls-auth-clients", "no"),
            *("--save", "", "--appendonly", "no", "--dir", str(redis.dir), "--requirepass", "redis-secret"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        env = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port), "REDIS_PASSWORD": "redis-secret"}
        import time

        deadline = time.monotonic() + 20
        while True:
            answer = settings_child(REDIS_ROUND_TRIP, **env, REDIS_TLS="true", REDIS_TLS_CA=str(pki["ca"]))
            if answer.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert answer.returncode == 0, answer.stderr
        lines = answer.stdout.splitlines()
        assert lines[0] == "through TLS"
        assert lines[1].startswith("broker rediss://")
        assert lines[2] == "health up"

        # another CA's certificate is refused
        wrong = settings_child(REDIS_ROUND_TRIP, **env, REDIS_TLS="true", REDIS_TLS_CA=str(pki["other_ca"]))
        assert wrong.returncode != 0 and "certificate verify failed" in wrong.stderr
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DB_SSL_MODE": "VERIFY_CA"}, "needs DB_SSL_CA"),
        ({"DB_SSL_MODE": "sometimes"}, "is not one of"),
        ({"DB_SSL_CA": "/nonexistent/ca.pem"}, "is not a readable file"),
        ({"DB_SSL_MODE": "REQUIRED", "DB_SSL_CERT": "/etc/hostname"}, "go together"),
    ],
)
def test_database_tls_settings_refuse_what_they_cannot_honour(monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ImproperlyConfigured, match=message):
        mysql_tls_options("DB1")


def test_database_tls_settings(monkeypatch, pki):
    assert mysql_tls_options("DB1") == {}
    monkeypatch.setenv("DB_SSL_CA", str(pki["ca"]))
    assert mysql_tls_options("DB1") == {"ssl_mode": "VERIFY_IDENTITY", "ssl": {"ca": str(pki["ca"])}}
    monkeypatch.setenv("DB2_SSL_MODE", "verify-ca")  # per server, over the DB_ default
    assert mysql_tls_options("DB2")["ssl_mode"] == "VERIFY_CA"


def test_redis_tls_settings(monkeypatch, pki):
    assert redis_tls_options() is None
    monkeypatch.setenv("REDIS_TLS_CA", str(pki["ca"]))
    with pytest.raises(ImproperlyConfigured, match="REDIS_TLS is not true"):
        redis_tls_options()
    monkeypatch.setenv("REDIS_TLS", "true")
    assert redis_tls_options()["ssl_ca_certs"] == str(pki["ca"])  # type: ignore[index]
    monkeypatch.delenv("REDIS_TLS_CA")
    with pytest.raises(ImproperlyConfigured, match="needs REDIS_TLS_CA"):
        redis_tls_options()
