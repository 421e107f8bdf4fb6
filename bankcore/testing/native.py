"""The production configs (deploy/) run natively, for tests: nginx with a self-signed certificate,
gunicorn, Celery worker and beat, Prometheus, each on loopback with free ports and temp
directories. Used by ``bankcore/tests/deploy/test_configs.py`` (``nginx -t``) and
``bankcore/tests/deploy/test_native_stack.py`` (the whole stack)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from bankcore.testing.paths import ROOT

DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    """Path of a system program (Debian puts nginx in /usr/sbin, which a user's PATH may lack)."""
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if found is None:
        raise RuntimeError(f"{name} is not installed (deploy/install-system-deps.sh installs it)")
    return found


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for localhost/127.0.0.1: (certificate, key)."""
    certificate, key = directory / "banking.crt", directory / "banking.key"
    subprocess.run(
        [
            tool("openssl"),
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(certificate)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return certificate, key


def nginx_templates_rendered(directory: Path, environment: dict[str, str]) -> Path:
    """deploy/nginx/templates/*.template rendered into ``directory/conf.d`` as the nginx image
    renders them at start (envsubst: ``${NAME}`` of a variable set is replaced, anything else is
    left as it is)."""
    import string

    target = directory / "conf.d"
    target.mkdir(exist_ok=True)
    for template in sorted((DEPLOY / "nginx" / "templates").glob("*.template")):
        text = string.Template(template.read_text()).safe_substitute(environment)
        (target / template.name.removesuffix(".template")).write_text(text)
    return target


def nginx_config_for(
    directory: Path,
    *,
    upstream: str,
    http_port: int,
    https_port: int,
    certificate: Path,
    key: Path,
    server_name: str = "localhost",
    published_https_port: int | None = None,
) -> Path:
    """deploy/nginx/nginx.conf with the lines of its templating contract rewritten for a run
    outside Docker (upstream, certificate paths, listen ports on loopback, static files, the
    rendered templates' directory), plus temp paths inside ``directory``. Everything else is the
    production file, unchanged. ``published_https_port`` is HTTPS_PORT, the port the redirect
    names (default: ``https_port``)."""
    conf_d = nginx_templates_rendered(
        directory,
        {"SERVER_NAME": server_name, "HTTPS_PORT": str(published_https_port or https_port)},
    )
    lines = (DEPLOY / "nginx" / "nginx.conf").read_text().splitlines()
    replacements = {
        "set $banking_app banking-app:8000;": f"set $banking_app {upstream};",
        "include /etc/nginx/conf.d/bankcore-http.conf;": f"include {conf_d}/bankcore-http.conf;",
        "include /etc/nginx/conf.d/bankcore-server-name.conf;": f"include {conf_d}/bankcore-server-name.conf;",
        "ssl_certificate /etc/nginx/ssl/banking.crt;": f"ssl_certificate {certificate};",
        "ssl_certificate_key /etc/nginx/ssl/banking.key;": f"ssl_certificate_key {key};",
        "listen 80 default_server;": f"listen 127.0.0.1:{http_port} default_server;",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "alias /srv/static/;": f"alias {directory}/static/;",
    }
    for old, new in replacements.items():
        found = [i for i, line in enumerate(lines) if line.strip() == old]
        if len(found) != 1:
            raise AssertionError(f"deploy/nginx/nginx.conf no longer has exactly one line {old!r}")
        lines[found[0]] = lines[found[0]].replace(old, new)
    temp_paths = []
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / name).mkdir(exist_ok=True)
        (directory / name).chmod(0o777)  # nginx's workers run as nobody when started by root
        temp_paths.append(f"    {name}_temp_path {directory}/{name};")
    http = lines.index("http {")
    lines[http + 1 : http + 1] = temp_paths
    (directory / "static").mkdir(exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text("\n".join(lines) + "\n")
    return config


def nginx_command(config: Path, directory: Path, *args: str) -> list[str]:
    return [tool("nginx"), "-p", f"{directory}/", "-c", str(config), "-e", "stderr", *args]


def prometheus_config_for(directory: Path, targets: dict[str, list[str]], *, interval: str = "2s") -> Path:
    """deploy/prometheus/prometheus.yml (global settings, rule files, jobs) with each job's
    targets replaced by ``targets[job]`` (static, loopback); jobs not in ``targets`` (the
    exporters, which do not run natively) are left out. Scraped every ``interval``."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval)
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] not in targets:
            continue
        for key in [k for k in job if k.endswith("_sd_configs") or k == "static_configs"]:
            del job[key]
        job.pop("scrape_interval", None)
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
        jobs.append(job)
    missing = set(targets) - {job["job_name"] for job in jobs}
    if missing:
        raise AssertionError(f"deploy/prometheus/prometheus.yml has no job {missing}")
    config["scrape_configs"] = jobs
    config.pop("alerting", None)  # no Alertmanager runs natively
    for rule_file in config.get("rule_files", []):
        shutil.copy(DEPLOY / "prometheus" / rule_file, directory / rule_file)
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --- Processes ------------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    _handle: IO[bytes] = field(repr=False)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


class Stack:
    """Processes started in their own process groups, logs in files; ``stop()`` ends each of
    them (TERM, then KILL) and only them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.services: dict[str, Service] = {}

    def start(self, name: str, command: list[str], *, env: dict[str, str], cwd: Path = ROOT) -> Service:
        log = self.directory / f"{name}.out"
        handle = open(log, "wb")
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        service = Service(name, process, log, handle)
        self.services[name] = service
        return service

    def check_running(self) -> None:
        for service in self.services.values():
            if service.process.poll() is not None:
                raise AssertionError(f"{service.name} exited with {service.process.returncode}:\n{service.tail()}")

    def stop(self, *names: str, timeout: float = 20.0) -> None:
        for name in names or list(self.services):
            service = self.services.pop(name, None)
            if service is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.process.pid, signal.SIGTERM)
            try:
                service.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.process.pid, signal.SIGKILL)
                service.process.wait(timeout=10)
            service._handle.close()

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Call ``probe`` until it returns a true value (exceptions count as "not yet")."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            self.check_running()
            try:
                result = probe()
                if result:
                    return result
                last = result
            except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
                last = exc
            time.sleep(0.3)
        logs = "\n".join(f"--- {s.name}\n{s.tail()}" for s in self.services.values())
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{logs}")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    url: str,
    *,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    cafile: Path | None = None,
    timeout: float = 10.0,
) -> Response:
    """One request; an HTTP error status is returned, not raised. Redirects are not followed."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("Content-Type", "application/json")
    context = ssl.create_default_context(cafile=str(cafile)) if cafile else None

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=timeout) as response:
            return Response(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Response(error.code, dict(error.headers), error.read())


def json_lines(text: str) -> list[dict[str, Any]]:
    """The lines of ``text`` that are JSON objects (a process log may start with other lines)."""
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines
