"""Strict settings: a malformed value stops start-up naming the variable."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from bankcore.env import env_bool, env_decimal, env_int, env_str


def test_readers_name_the_variable(monkeypatch):
    monkeypatch.setenv("DB1_PORT", "abc")
    with pytest.raises(ImproperlyConfigured, match="DB1_PORT"):
        env_int("DB1_PORT", 3306)
    monkeypatch.setenv("MAX_TRANSFER_AMOUNT", "lots")
    with pytest.raises(ImproperlyConfigured, match="MAX_TRANSFER_AMOUNT"):
        env_decimal("MAX_TRANSFER_AMOUNT", "1.00")
    for bad in ("-1", "0", "NaN", "1.001", "Infinity"):
        monkeypatch.setenv("DAILY_TRANSFER_LIMIT", bad)
        with pytest.raises(ImproperlyConfigured, match="DAILY_TRANSFER_LIMIT"):
            env_decimal("DAILY_TRANSFER_LIMIT", "1.00")
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DEBUG"):
        env_bool("DEBUG", False)


def test_secret_from_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-from-a-file\n")
    monkeypatch.setenv("SECRET_KEY_FILE", str(secret))
    assert env_str("SECRET_KEY") == "s3cr3t-from-a-file"


def _settings_import(settings_module: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DB", "REDIS", "SECRET", "JWT"))}
    clean.update(env, DJANGO_SETTINGS_MODULE=settings_module)
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; print(sorted(settings.LEDGERS))",
        ],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_default_short_or_shared_secrets(tmp_path):
    result = _settings_import("bankcore.settings.production", BANKCORE_VAR_DIR=str(tmp_path))
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr
    result = _settings_import(
        "bankcore.settings.production", BANKCORE_VAR_DIR=str(tmp_path), SECRET_KEY="x" * 40, JWT_SECRET_KEY="short"
    )
    assert result.returncode != 0 and "JWT_SECRET_KEY" in result.stderr
    result = _settings_import(
        "bankcore.settings.production", BANKCORE_VAR_DIR=str(tmp_path), SECRET_KEY="x" * 40, JWT_SECRET_KEY="x" * 40
    )
    assert _refused(result, "JWT_SECRET_KEY", "SECRET_KEY", "differ"), result.stderr
    result = _settings_import(
        "bankcore.settings.production", BANKCORE_VAR_DIR=str(tmp_path), SECRET_KEY="x" * 40, JWT_SECRET_KEY="y" * 40
    )
    assert result.returncode == 0, result.stderr


def test_malformed_port_stops_startup(tmp_path):
    result = _settings_import(
        "bankcore.settings.development", DB1_HOST="db", DB1_PORT="abc", BANKCORE_VAR_DIR=str(tmp_path)
    )
    assert result.returncode != 0 and "DB1_PORT" in result.stderr


def test_ledgers_come_from_configuration(tmp_path):
    three = {f"DB{n}_HOST": f"host{n}" for n in (1, 2, 3)}
    result = _settings_import("bankcore.settings.development", BANKCORE_VAR_DIR=str(tmp_path), **three)
    assert result.stdout.strip() == "['db1', 'db2', 'db3']", result.stderr
    result = _settings_import("bankcore.settings.development", BANKCORE_VAR_DIR=str(tmp_path), SQLITE_LEDGERS="3")
    assert result.stdout.strip() == "['db1', 'db2', 'db3']", result.stderr


def _refused(result: subprocess.CompletedProcess[str], *names: str) -> bool:
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
    return (
        result.returncode != 0
        and last.startswith("django.core.exceptions.ImproperlyConfigured")
        and all(name in last for name in names)
    )


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"DB1_HOST": "h1", "DB3_HOST": "h3"}, ("DB3_HOST", "DB2_HOST")),
        ({"DB1_HOST": "h1", "DB2_HOST": "h2", "DB4_NAME": "x"}, ("DB4_NAME", "DB3_HOST")),
        ({"DB1_HOST": "h1", "DB2_PORT": "3307"}, ("DB2_PORT", "DB2_HOST")),
        ({"DB1_HOST": "h1", "DB2_USER": "u", "DB2_PASSWORD": "p"}, ("DB2_PASSWORD", "DB2_HOST")),
        ({"DB1_HOST": "h1", "DB2_PASSWORD_FILE": "/run/secrets/db2"}, ("DB2_PASSWORD_FILE", "DB2_HOST")),
        # Without DB1_HOST the ledgers are SQLite files: a server's settings would be ignored.
        ({"DB2_HOST": "h2"}, ("DB2_HOST", "DB1_HOST")),
        ({"DB1_PORT": "3306"}, ("DB1_PORT", "DB1_HOST", "SQLite")),
    ],
)
def test_ledger_variables_past_the_last_configured_ledger_stop_startup(tmp_path, env, names):
    result = _settings_import("bankcore.settings.development", BANKCORE_VAR_DIR=str(tmp_path), **env)
    assert _refused(result, *names), result.stderr


def test_empty_ledger_variables_count_as_unset(tmp_path):
    result = _settings_import(
        "bankcore.settings.development", BANKCORE_VAR_DIR=str(tmp_path), DB1_HOST="h1", DB2_HOST="", DB2_PORT=""
    )
    assert result.stdout.strip() == "['db1']", result.stderr
    result = _settings_import("bankcore.settings.development", BANKCORE_VAR_DIR=str(tmp_path), DB1_HOST="", DB2_NAME="")
    assert result.stdout.strip() == "['db1', 'db2']", result.stderr


@pytest.mark.parametrize("currency", ["cny", "EURO", "US", "C1Y", "ÄBC", " CNY"])
def test_a_malformed_default_currency_stops_startup(tmp_path, currency):
    result = _settings_import(
        "bankcore.settings.development", BANKCORE_VAR_DIR=str(tmp_path), DEFAULT_CURRENCY=currency
    )
    assert _refused(result, "DEFAULT_CURRENCY"), result.stderr


def test_another_default_currency_is_accepted(tmp_path):
    result = _settings_import("bankcore.settings.development", BANKCORE_VAR_DIR=str(tmp_path), DEFAULT_CURRENCY="USD")
    assert result.returncode == 0, result.stderr


def _gunicorn_config() -> dict:  # type: ignore[type-arg]
    import runpy
    from pathlib import Path

    return runpy.run_path(str(Path(__file__).resolve().parents[2] / "deploy" / "gunicorn.conf.py"))


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"GUNICORN_WORKERS": "four"}, "GUNICORN_WORKERS"),
        ({"GUNICORN_WORKERS": "0"}, "GUNICORN_WORKERS"),
        ({"GUNICORN_THREADS": "2.5"}, "GUNICORN_THREADS"),
        ({"GUNICORN_THREADS": "-1"}, "GUNICORN_THREADS"),
        ({"GUNICORN_LOG_LEVEL": "loud"}, "GUNICORN_LOG_LEVEL"),
        ({"GUNICORN_LOG_LEVEL": "", "LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
    ],
)
def test_gunicorn_config_refuses_a_malformed_value_naming_it(monkeypatch, env, name):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ImproperlyConfigured, match=f"^{name}="):
        _gunicorn_config()


def test_gunicorn_config_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("GUNICORN_LOG_LEVEL", raising=False)
    monkeypatch.setenv("GUNICORN_BIND", "127.0.0.1:9000")
    workers = tmp_path / "workers"
    workers.write_text("3\n")
    monkeypatch.setenv("GUNICORN_WORKERS_FILE", str(workers))
    monkeypatch.setenv("GUNICORN_THREADS", "8")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    config = _gunicorn_config()
    assert (config["bind"], config["workers"], config["threads"], config["loglevel"]) == (
        "127.0.0.1:9000",
        3,
        8,
        "warning",
    )


def test_django_prometheus_is_installed_as_its_documentation_says():
    """Its middleware alone is not its set-up: the app's ``ready()`` starts the exports that
    settings ask for (``PROMETHEUS_METRICS_EXPORT_PORT``, ``PROMETHEUS_EXPORT_MIGRATIONS``)."""
    from django.apps import apps
    from django.conf import settings

    assert apps.is_installed("django_prometheus")
    assert settings.MIDDLEWARE[0] == "django_prometheus.middleware.PrometheusBeforeMiddleware"


def test_every_variable_the_code_reads_is_documented_in_env_example():
    """Each literal name passed to a strict reader appears in .env.example (set or commented)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    read = set()
    for package in ("bankcore", "accounts", "transfers", "audit"):
        for path in (root / package).rglob("*.py"):
            if "tests" in path.parts or "testing" in path.parts:
                continue
            read |= set(re.findall(r'env_[a-z_]+\(\s*"([A-Z][A-Z0-9_]+)"', path.read_text()))
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (root / ".env.example").read_text(), re.M))
    assert read - documented == set()
