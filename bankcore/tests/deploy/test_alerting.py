"""Alerts reach people: Alertmanager's configuration rendered from .env passes amtool, the
liveness rules pass their promtool unit tests, every alert has a runbook section in
docs/operations.md, and Celery beat's heartbeat is exported and checked."""

from __future__ import annotations

import io
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from bankcore.testing.native import tool

ROOT = Path(settings.BASE_DIR)
DEPLOY = ROOT / "deploy"


def render(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(DEPLOY / "alertmanager" / "render.sh"), str(tmp_path / "alertmanager.yml")],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def amtool_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("amtool"), "check-config", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"ALERT_WEBHOOK_URL": "https://chat.example.com/hooks/T0/B0?x=1&y=2"},
        {
            "ALERT_EMAIL_TO": "ops@example.com, oncall@example.com",
            "ALERT_SMTP_SMARTHOST": "smtp.example.com:587",
            "ALERT_SMTP_USER": "alerts",
            "ALERT_SMTP_PASSWORD": 'p"a\\ss: #word',
            "ALERT_WEBHOOK_URL": "http://bridge:8080/alert",
            "SERVER_NAME": "bank.example.com",
        },
    ],
    ids=["ui-only", "webhook", "email-and-webhook"],
)
def test_alertmanager_configuration_from_env_is_valid(tmp_path, env):
    result = render(tmp_path, **env)
    assert result.returncode == 0, result.stderr
    check = amtool_check(tmp_path / "alertmanager.yml")
    assert check.returncode == 0, check.stdout + check.stderr

    config = yaml.safe_load((tmp_path / "alertmanager.yml").read_text())
    [receiver] = config["receivers"]
    if "ALERT_EMAIL_TO" in env:
        assert receiver["email_configs"][0]["to"] == env["ALERT_EMAIL_TO"]
        assert config["global"]["smtp_auth_password"] == env["ALERT_SMTP_PASSWORD"]
        assert config["global"]["smtp_from"] == "alertmanager@bank.example.com"
    if "ALERT_WEBHOOK_URL" in env:
        assert receiver["webhook_configs"][0]["url"] == env["ALERT_WEBHOOK_URL"]
    if not env:
        assert set(receiver) == {"name"}
        assert "reach no one" in result.stderr
    # critical alerts page faster and more often than warnings
    [critical] = config["route"]["routes"]
    assert critical["matchers"] == ['severity="critical"'] and critical["repeat_interval"] == "1h"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ALERT_EMAIL_TO": "ops@example.com"}, "ALERT_SMTP_SMARTHOST is not"),
        ({"ALERT_WEBHOOK_URL": "ftp://example.com"}, "must start with http"),
        ({"ALERT_EMAIL_TO": "a@b", "ALERT_SMTP_SMARTHOST": "s:25", "ALERT_SMTP_REQUIRE_TLS": "maybe"}, "not true"),
    ],
)
def test_alertmanager_refuses_an_incomplete_receiver(tmp_path, env, message):
    result = render(tmp_path, **env)
    assert result.returncode != 0 and message in result.stderr


def test_prometheus_sends_alerts_to_alertmanager_with_a_runbook_label():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["alertmanager"]
    assert "./deploy/alertmanager:/etc/bankcore-alertmanager:ro" in service["volumes"]
    assert service["entrypoint"][1] == "/etc/bankcore-alertmanager/render.sh"
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    relabel = config["alerting"]["alert_relabel_configs"]
    assert relabel[0]["action"] == "lowercase" and relabel[1]["replacement"] == "docs/operations.md#$1"


def alert_names() -> set[str]:
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_every_alert_has_a_runbook_section():
    headings = re.findall(r"^#{2,4} (\S+)\s*$", (ROOT / "docs" / "operations.md").read_text(), re.MULTILINE)
    # GitHub's anchor of a one-word heading is the word in lower case: what prometheus.yml links to.
    anchors = {heading.lower() for heading in headings}
    names = alert_names()
    assert len(names) >= 12
    missing = {name for name in names if name.lower() not in anchors}
    assert not missing, f"docs/operations.md has no runbook heading for {sorted(missing)}"


def test_liveness_alerts_pass_their_unit_tests():
    result = subprocess.run(
        [tool("promtool"), "test", "rules", "alerts_test.yml"],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    for metric in (
        "bankcore_beat_heartbeat_timestamp_seconds",
        "bankcore_reconciliation_last_run_timestamp_seconds",
        "bankcore_audit_chain_ok",
    ):
        assert f"absent_over_time({metric}[" in rules


# --- Beat's heartbeat -----------------------------------------------------------------------------


@pytest.mark.django_db(databases="__all__")
def test_the_heartbeat_is_scheduled_exported_and_checked():
    from django.core.cache import cache

    from bankcore.heartbeat import CACHE_KEY, beat_heartbeat
    from bankcore.metrics import exposition

    assert any(entry["task"] == "bankcore.heartbeat.beat_heartbeat" for entry in settings.CELERY_BEAT_SCHEDULE.values())
    assert "bankcore.heartbeat" in settings.CELERY_IMPORTS
    cache.delete(CACHE_KEY)
    assert "bankcore_beat_heartbeat_timestamp_seconds" not in exposition().decode()
    with pytest.raises(CommandError, match="no beat heartbeat"):
        call_command("beat_health")

    beat_heartbeat.apply()  # as a worker runs it

    line = next(
        line
        for line in exposition().decode().splitlines()
        if line.startswith("bankcore_beat_heartbeat_timestamp_seconds ")
    )
    assert abs(float(line.split()[1]) - time.time()) < 60
    out = io.StringIO()
    call_command("beat_health", stdout=out)
    assert "ago" in out.getvalue()
    cache.set(CACHE_KEY, time.time() - 600, timeout=None)
    with pytest.raises(CommandError, match="more than 180s"):
        call_command("beat_health")
    cache.delete(CACHE_KEY)
