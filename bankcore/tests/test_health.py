import pytest
from django.db import connections

from bankcore.testing.plugin import ledger_servers

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_health_is_ok_when_everything_answers(client, ledgers):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["down"] == []
    assert set(body["checks"]) == {"control_plane", "redis", *(f"ledger:{alias}" for alias in ledgers)}


def test_health_is_503_naming_the_ledger_that_is_down(client):
    server = ledger_servers()[1]  # db2: the first server also hosts the control plane
    server.kill()
    try:
        connections["db2"].close()
        response = client.get("/health")
        assert response.status_code == 503
        assert response.json()["down"] == ["ledger:db2"]
    finally:
        server.start()
        connections["db2"].close()
    assert client.get("/health").status_code == 200
