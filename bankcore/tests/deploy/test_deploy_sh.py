"""deploy/deploy.sh's host name, version checks and certificate, deploy/firewall.sh, and nginx
starting without the app and redirecting to the published HTTPS port. The scripts' functions run
in a copy of the deployment files (deploy.sh defines them without running when sourced)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from bankcore.testing.native import Stack, http, nginx_command, nginx_config_for, self_signed_certificate, tool
from bankcore.testing.servers import free_port

ROOT = Path(settings.BASE_DIR)


def bash(script: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The files deploy.sh works on: deploy/ and .env.example."""
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy", ignore=shutil.ignore_patterns("ssl"))
    shutil.copy(ROOT / ".env.example", tmp_path / ".env.example")
    return tmp_path


def env_file(directory: Path) -> dict[str, str]:
    lines = (directory / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.mark.parametrize(
    ("have", "need", "ok"),
    [
        ("20.10.0", "20.10", True),
        ("24.0.7", "20.10", True),
        ("20.10.24+dfsg1", "20.10", True),
        ("19.03.13", "20.10", False),
        ("20.9.1", "20.10", False),
        ("v2.21.0", "2.0", True),
        ("1.29.2", "2.0", False),
        ("", "2.0", False),
    ],
)
def test_version_check(have, need, ok):
    result = bash(f'die() {{ exit 9; }}; source deploy/lib.sh; version_at_least "{have}" "{need}"', ROOT)
    assert result.returncode == (0 if ok else 1), result.stderr


def test_deploy_refuses_docker_older_than_the_specification(checkout, tmp_path):
    # given a docker client reporting Engine 19.03 and Compose 1.29
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "docker").write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        "  'version --format {{.Server.Version}}') echo 19.03.13 ;;\n"
        "  'compose version --short') echo 1.29.2 ;;\n"
        "  info) exit 0 ;;\n"
        "esac\n"
    )
    (fake / "docker").chmod(0o755)

    result = bash(
        "source deploy/deploy.sh; check_prerequisites", checkout, PATH=f"{fake}:/usr/bin:/bin:/usr/sbin:/sbin"
    )

    assert result.returncode == 1
    assert "Docker Engine 19.03.13 is too old" in result.stderr and "20.10 or later" in result.stderr
    assert "Docker Compose 1.29.2 is too old" in result.stderr
    assert not (checkout / ".env").exists()  # nothing was changed


def test_host_name_reaches_env_and_certificate(checkout):
    # when deploy.sh is given a host name on a first run
    result = bash(
        "source deploy/deploy.sh; HOST=bank.example.com; write_env; record_host; ensure_certificate", checkout
    )

    # then .env names it, and compose derives ALLOWED_HOSTS / CSRF_TRUSTED_ORIGINS from it
    assert result.returncode == 0, result.stderr
    env = env_file(checkout)
    assert env["SERVER_NAME"] == "bank.example.com"
    assert env["ALLOWED_HOSTS"] == "" and env["CSRF_TRUSTED_ORIGINS"] == ""
    assert (checkout / ".env").stat().st_mode & 0o777 == 0o600
    from bankcore.testing.deploy import interpolated

    app_env = (ROOT / "docker-compose.yml").read_text()
    allowed = interpolated("${ALLOWED_HOSTS:-${SERVER_NAME:-localhost},localhost,127.0.0.1,banking-app}", env)
    assert allowed.split(",")[0] == "bank.example.com"
    assert "${ALLOWED_HOSTS:-${SERVER_NAME:-localhost},localhost,127.0.0.1,banking-app}" in app_env
    # and the self-signed certificate names it
    certificate = checkout / "deploy" / "nginx" / "ssl" / "banking.crt"
    text = subprocess.run(
        [tool("openssl"), "x509", "-in", str(certificate), "-noout", "-subject", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CN = bank.example.com" in text and "DNS:bank.example.com" in text


def test_a_new_host_name_replaces_a_self_signed_certificate_but_never_a_real_one(checkout, tmp_path):
    # given a first deployment for localhost
    first = bash("source deploy/deploy.sh; write_env; ensure_certificate", checkout)
    assert first.returncode == 0, first.stderr
    ssl = checkout / "deploy" / "nginx" / "ssl"
    assert "self-signed one for localhost" in first.stdout

    # when the host name is given later, with explicit ALLOWED_HOSTS in .env
    (checkout / ".env").write_text(
        (checkout / ".env").read_text().replace("ALLOWED_HOSTS=\n", "ALLOWED_HOSTS=localhost,127.0.0.1,banking-app\n")
    )
    second = bash("source deploy/deploy.sh; HOST=bank.example.com; record_host; ensure_certificate", checkout)
    assert second.returncode == 0, second.stderr
    assert "does not name bank.example.com: replacing it" in second.stdout
    assert env_file(checkout)["ALLOWED_HOSTS"] == "bank.example.com,localhost,127.0.0.1,banking-app"

    # then a certificate signed by someone else (a CA) that does not name the host is refused
    ca_cert, ca_key = self_signed_certificate(tmp_path)
    openssl = tool("openssl")
    subprocess.run(
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=other.example.com"]
        + ["-keyout", str(ssl / "banking.key"), "-out", str(tmp_path / "req.csr")],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [openssl, "x509", "-req", "-in", str(tmp_path / "req.csr"), "-CA", str(ca_cert), "-CAkey", str(ca_key)]
        + ["-CAcreateserial", "-days", "2", "-out", str(ssl / "banking.crt")],
        check=True,
        capture_output=True,
    )
    before = (ssl / "banking.crt").read_bytes()
    third = bash("source deploy/deploy.sh; ensure_certificate", checkout)
    assert third.returncode == 1
    assert "does not name bank.example.com and is not self-signed" in third.stderr
    assert (ssl / "banking.crt").read_bytes() == before


def test_deploy_refuses_a_malformed_host_name(checkout):
    result = bash("bash deploy/deploy.sh --host 'bank example;rm' --no-build", checkout)
    assert result.returncode == 1 and "is not a host name" in result.stderr
    assert not (checkout / ".env").exists()


# --- Firewall ---------------------------------------------------------------------------------------


def test_firewall_opens_ssh_and_nginx_ports_only(checkout):
    # given .env publishing HTTPS on 8443
    (checkout / ".env").write_text("HTTP_PORT=80\nHTTPS_PORT=8443\n")

    result = bash("bash deploy/firewall.sh --dry-run --ssh-port 2222 --ssh-from 203.0.113.0/24", checkout)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "ufw default deny incoming",
        "ufw default allow outgoing",
        "ufw limit from 203.0.113.0/24 to any port 2222 proto tcp comment SSH",
        "ufw allow 80/tcp comment bankcore nginx HTTP (redirects to HTTPS)",
        "ufw allow 8443/tcp comment bankcore nginx HTTPS",
        "ufw --force enable",
    ]
    # the ports compose publishes on every interface are exactly those
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    public = {
        service: port
        for service, spec in services.items()
        for port in spec.get("ports", [])
        if not str(port).startswith("127.0.0.1:")
    }
    assert public == {"nginx": "${HTTPS_PORT:-443}:443"} or set(public) == {"nginx"}


@pytest.mark.parametrize("args", [["--ssh-port", "0"], ["--ssh-port", "ssh"], ["--ssh-from", "any; reboot"]])
def test_firewall_refuses_bad_arguments(checkout, args):
    result = bash("bash deploy/firewall.sh --dry-run " + " ".join(f"'{a}'" for a in args), checkout)
    assert result.returncode == 1 and "ufw" not in result.stdout


# --- nginx --------------------------------------------------------------------------------------------


def test_nginx_starts_while_the_app_does_not_resolve(tmp_path):
    # given the production config with its real upstream name, which does not resolve here
    certificate, key = self_signed_certificate(tmp_path)
    config = nginx_config_for(
        tmp_path,
        upstream="banking-app:8000",
        http_port=free_port(),
        https_port=free_port(),
        certificate=certificate,
        key=key,
    )

    result = subprocess.run(
        nginx_command(config, tmp_path, "-t", "-g", f"pid {tmp_path}/nginx.pid;"), capture_output=True, text=True
    )

    # then nginx accepts it: the name is resolved per request, not at start
    assert result.returncode == 0, result.stderr


def test_http_redirects_to_the_published_https_port(tmp_path):
    certificate, key = self_signed_certificate(tmp_path)
    http_port, https_port = free_port(), free_port()
    stack = Stack(tmp_path)
    for published, suffix in ((8443, ":8443"), (443, "")):
        directory = tmp_path / str(published)
        directory.mkdir()
        config = nginx_config_for(
            directory,
            upstream="127.0.0.1:9",
            http_port=http_port,
            https_port=https_port,
            certificate=certificate,
            key=key,
            server_name="bank.example.com",
            published_https_port=published,
        )
        assert "server_name bank.example.com;" in (directory / "conf.d" / "bankcore-server-name.conf").read_text()
        name = f"nginx-{published}"
        stack.start(name, nginx_command(config, directory, "-g", f"daemon off; pid {directory}/nginx.pid;"), env={})
        try:
            stack.wait_for("nginx", lambda: http(f"http://127.0.0.1:{http_port}/nginx-health").status == 200)
            answer = http(f"http://127.0.0.1:{http_port}/admin/?q=1", headers={"Host": "bank.example.com"})
            assert answer.status == 301
            assert answer.headers["Location"] == f"https://bank.example.com{suffix}/admin/?q=1"
        finally:
            stack.stop(name)
