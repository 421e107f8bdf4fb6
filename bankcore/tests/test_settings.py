"""Strict settings: a malformed value stops start-up naming the variable."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from bankcore.env import env_bool, env_decimal, env_int, env_str
from bankcore.testing.deploy import gunicorn_config


def test_readers_name_the_variable(monkeypatch):
    """Given malformed values, when the strict readers read them, then each refusal names its variable."""
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
    """Given X_FILE naming a file, when X is read, then it is the file's content, stripped."""
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-from-a-file\n")
    monkeypatch.setenv("SECRET_KEY_FILE", str(secret))
    assert env_str("SECRET_KEY") == "s3cr3t-from-a-file"


def test_a_variable_read_without_a_default_must_be_set(monkeypatch):
    """Given no default, when the variable is unset or empty, then reading it names it; a default stands in."""
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("SECRET_KEY_FILE", raising=False)
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY must be set"):
        env_str("SECRET_KEY")
    monkeypatch.setenv("SECRET_KEY", "")
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY must be set"):
        env_str("SECRET_KEY")
    assert env_str("SECRET_KEY", "stand-in") == "stand-in"


def _settings_import(settings_module: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DB", "REDIS", "SECRET", "JWT", "AUDIT_CHAIN"))}
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
    good = {"SECRET_KEY": "x" * 40, "JWT_SECRET_KEY": "y" * 40, "AUDIT_CHAIN_KEY": "z" * 40}

    def start(**secrets: str) -> subprocess.CompletedProcess[str]:
        return _settings_import("bankcore.settings.production", BANKCORE_VAR_DIR=str(tmp_path), **secrets)

    result = start()
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr
    assert _refused(start(**{**good, "JWT_SECRET_KEY": "short"}), "JWT_SECRET_KEY")
    assert _refused(start(**{**good, "JWT_SECRET_KEY": "x" * 40}), "JWT_SECRET_KEY", "SECRET_KEY", "differ")
    for bad in ("", "short", "x" * 40, "y" * 40):
        assert _refused(start(**{**good, "AUDIT_CHAIN_KEY": bad}), "AUDIT_CHAIN_KEY"), bad
    result = start(**good)
    assert result.returncode == 0, result.stderr


def test_malformed_port_stops_startup(tmp_path):
    """Given DB1_PORT that is no number, when the settings load, then start-up stops naming it."""
    result = _settings_import(
        "bankcore.settings.development", DB1_HOST="db", DB1_PORT="abc", BANKCORE_VAR_DIR=str(tmp_path)
    )
    assert result.returncode != 0 and "DB1_PORT" in result.stderr


def test_ledgers_come_from_configuration(tmp_path):
    """Given three servers or three SQLite files configured, when the settings load, then there are three ledgers."""
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
    """Given ledger variables set to "", when the settings load, then they count as unset."""
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
    """Given DEFAULT_CURRENCY=USD, when the settings load, then start-up succeeds."""
    result = _settings_import("bankcore.settings.development", BANKCORE_VAR_DIR=str(tmp_path), DEFAULT_CURRENCY="USD")
    assert result.returncode == 0, result.stderr


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
        gunicorn_config()


def test_gunicorn_config_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("GUNICORN_LOG_LEVEL", raising=False)
    monkeypatch.setenv("GUNICORN_BIND", "127.0.0.1:9000")
    workers = tmp_path / "workers"
    workers.write_text("3\n")
    monkeypatch.setenv("GUNICORN_WORKERS_FILE", str(workers))
    monkeypatch.setenv("GUNICORN_THREADS", "8")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    config = gunicorn_config()
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
    from django.utils.module_loading import import_string
    from django_prometheus.middleware import PrometheusAfterMiddleware, PrometheusBeforeMiddleware

    assert apps.is_installed("django_prometheus")
    # Its two middleware outermost and innermost but for axes.
    assert issubclass(import_string(settings.MIDDLEWARE[0]), PrometheusBeforeMiddleware)
    assert issubclass(import_string(settings.MIDDLEWARE[-2]), PrometheusAfterMiddleware)


# Calls that read one environment variable named by their first argument: the strict readers
# (bankcore.env's env_*, settings' own _env_* helpers, _raw) and os.environ's own readers.
_READER = re.compile(r"_?env_[a-z_]+|_raw")
_OS_READERS = {"os.environ.get", "os.getenv", "os.environ.setdefault"}
# Readers of a family of variables: the first argument is a prefix, the names are its suffixes.
_PREFIX_READERS = {"mysql_server"}
_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
# Set by the system, not by whoever deploys bankcore.
_SYSTEM_VARIABLES = {"PATH"}
_SKIPPED_DIRECTORIES = {".venv", ".git", "node_modules", "var", "__pycache__", ".mypy_cache", ".pytest_cache"}


def _python_files(root: Path) -> list[Path]:
    found = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if d not in _SKIPPED_DIRECTORIES and not d.startswith(".")]
        found += [Path(directory) / name for name in files if name.endswith(".py")]
    return found


def _variables_read(root: Path) -> tuple[set[str], set[str]]:
    """Every environment variable a Python file of the project reads, as literal names and as
    regular expressions for the names built by f-strings (``f"DB{n}_HOST"``)."""
    suffixes = re.findall(r'f"\{prefix\}_([A-Z][A-Z0-9_]*)"', (root / "bankcore" / "env.py").read_text())
    names: set[str] = set()
    patterns: set[str] = set()

    def add(node: ast.expr | None, suffix: str = "") -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _NAME.fullmatch(node.value):
            names.add(node.value + suffix)
        elif isinstance(node, ast.JoinedStr):
            pattern = "".join(
                re.escape(str(part.value)) if isinstance(part, ast.Constant) else "[A-Z0-9_]+" for part in node.values
            )
            patterns.add(pattern + re.escape(suffix))

    for path in _python_files(root):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.args:
                function = ast.unparse(node.func)
                short = function.rsplit(".", 1)[-1]
                if function in _OS_READERS or _READER.fullmatch(short):
                    # The readers' own f"{name}_FILE": the names come from their callers, checked here.
                    if not (path.name == "env.py" and isinstance(node.args[0], ast.JoinedStr)):
                        add(node.args[0])
                elif short in _PREFIX_READERS:
                    for suffix in suffixes:
                        add(node.args[0], f"_{suffix}")
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                if isinstance(node.ctx, ast.Load):
                    add(node.slice)
            elif isinstance(node, ast.Compare) and any(isinstance(op, ast.In) for op in node.ops):
                if any(ast.unparse(c) == "os.environ" for c in node.comparators):
                    add(node.left)
    return names - _SYSTEM_VARIABLES, patterns


def test_every_variable_the_code_reads_is_documented_in_env_example():
    """Each variable any Python file of the project reads (strict readers, os.environ, helper
    readers, names built by f-strings; test-only ones too) appears in .env.example, set or
    commented out."""
    root = Path(__file__).resolve().parents[2]
    names, patterns = _variables_read(root)
    # The scanner sees every kind of read: env_* readers, a settings helper (_env_rate),
    # os.environ.get and os.environ[...], a prefix reader (mysql_server), f-strings.
    assert {
        "MAX_TRANSFER_AMOUNT",
        "API_THROTTLE_ANON_RATE",
        "BANKCORE_TEST_LEDGERS",
        "BANKCORE_FAULT_AT",
        "GUNICORN_WORKERS",
        "DB_DEFAULT_HOST",
        "DB1_PASSWORD",
    } <= names
    assert "DB[A-Z0-9_]+_HOST" in patterns
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (root / ".env.example").read_text(), re.M))
    assert names - documented == set()
    assert {pattern for pattern in patterns if not any(re.fullmatch(pattern, name) for name in documented)} == set()


def test_the_variable_scanner_catches_each_way_of_reading(tmp_path):
    (tmp_path / "bankcore").mkdir()
    (tmp_path / "bankcore" / "env.py").write_text('def mysql_server(prefix):\n    return f"{prefix}_HOST"\n')
    (tmp_path / "module.py").write_text(
        "import os\n"
        'a = os.environ.get("A_GET")\n'
        'b = os.environ["B_ITEM"]\n'
        'c = os.getenv("C_GETENV")\n'
        'd = "D_IN" in os.environ\n'
        'e = env_int("E_READER", 1)\n'
        'f = _env_rate("F_HELPER", "1/s")\n'
        'g = mysql_server("G_PREFIX")\n'
        'h = env_optional(f"H{n}_HOST")\n'
        'os.environ["NOT_READ"] = "set, not read"\n'
        "i = os.environ.get(name)\n"
    )
    names, patterns = _variables_read(tmp_path)
    assert names == {"A_GET", "B_ITEM", "C_GETENV", "D_IN", "E_READER", "F_HELPER", "G_PREFIX_HOST"}
    assert patterns == {"H[A-Z0-9_]+_HOST"}
