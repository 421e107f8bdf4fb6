"""Safe defaults: nothing listens beyond loopback unless configured, /metrics is guarded by the app
itself, and forwarded headers are believed only from the configured proxies."""

import os
import re

import pytest
from django.conf import settings
from django.test import Client, override_settings

from bankcore.testing.deploy import gunicorn_config
from bankcore.testing.paths import ROOT
from bankcore.testing.personas import api_client_for, rates


def test_gunicorn_and_the_worker_metrics_listen_on_loopback_unless_configured(monkeypatch):
    monkeypatch.delenv("GUNICORN_BIND", raising=False)
    monkeypatch.delenv("GUNICORN_LOG_LEVEL", raising=False)
    assert gunicorn_config()["bind"] == "127.0.0.1:8000"
    if "CELERY_METRICS_ADDR" not in os.environ:
        assert settings.CELERY_METRICS_ADDR == "127.0.0.1"
    # The image, where the container's interfaces are its own, says 0.0.0.0 for both.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ENV GUNICORN_BIND=0\.0\.0\.0:8000 CELERY_METRICS_ADDR=0\.0\.0\.0$", dockerfile, re.M)


@pytest.mark.django_db(databases="__all__")
@pytest.mark.parametrize(
    ("meta", "allowed"),
    [
        ({"REMOTE_ADDR": "127.0.0.1"}, True),
        ({"REMOTE_ADDR": "203.0.113.5"}, False),
        # through the trusted proxy on loopback, for a client outside: refused
        ({"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "203.0.113.5"}, False),
        # a forged X-Real-IP from an untrusted peer changes nothing
        ({"REMOTE_ADDR": "203.0.113.5", "HTTP_X_REAL_IP": "127.0.0.1"}, False),
        ({"REMOTE_ADDR": "203.0.113.5", "HTTP_AUTHORIZATION": "Bearer s3cret-metrics-token"}, True),
        ({"REMOTE_ADDR": "203.0.113.5", "HTTP_AUTHORIZATION": "Bearer wrong"}, False),
    ],
)
def test_metrics_answer_only_an_allowed_network_or_the_token(meta, allowed):
    with override_settings(METRICS_TOKEN="s3cret-metrics-token"):
        response = Client().get("/metrics", **meta)
    assert response.status_code == (200 if allowed else 404)
    assert (b"bankcore_" in response.content) is allowed


@pytest.mark.django_db(databases="__all__")
def test_without_a_token_a_bearer_opens_nothing():
    with override_settings(METRICS_TOKEN=""):
        response = Client().get("/metrics", REMOTE_ADDR="203.0.113.5", HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 404


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_a_forged_forwarded_header_is_no_fresh_throttle_bucket(api_world):
    client = api_client_for(None)
    token = "/api/v1/auth/token/"
    with rates(anon="2/min"):
        codes = [
            client.post(
                token,
                {"username": "x", "password": "y"},
                format="json",
                REMOTE_ADDR="203.0.113.77",
                HTTP_X_FORWARDED_FOR=f"198.51.100.{n}",
                HTTP_X_REAL_IP=f"198.51.100.{n}",
            ).status_code
            for n in range(3)
        ]
    assert codes == [401, 401, 429]


@pytest.mark.django_db(transaction=True, databases="__all__")
def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(api_world):
    client = api_client_for(None)
    with override_settings(TRUSTED_PROXIES=["10.0.0.0/8"]), rates(anon="1/min"):
        codes = [
            client.post(
                "/api/v1/auth/token/",
                {"username": "x", "password": "y"},
                format="json",
                REMOTE_ADDR="10.0.0.1",
                HTTP_X_FORWARDED_FOR=f"192.0.2.{n}, 10.0.0.2",
            ).status_code
            for n in range(3)
        ]
    assert codes == [401, 401, 401]
