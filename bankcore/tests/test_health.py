import pytest

from bankcore.testing.plugin import ledger_servers

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_health_is_ok_when_everything_answers(client, ledgers):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["down"] == []
    assert set(body["checks"]) == {"control_plane", "redis", *(f"ledger:{alias}" for alias in ledgers)}


def test_health_is_503_naming_the_ledger_that_is_down_and_heals_by_itself(client):
    assert client.get("/health").status_code == 200  # this process holds a connection to db2
    server = ledger_servers()[1]  # db2: the first server also hosts the control plane
    server.kill()
    try:
        response = client.get("/health")
        assert response.status_code == 503
        assert response.json()["down"] == ["ledger:db2"]
    finally:
        server.start()
    # The dead connection was dropped by the failed check: the next one reconnects, and says so.
    response = client.get("/health")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["checks"]["ledger:db2"]["reconnects"] >= 1
    assert body["transfers_stuck"] == 0
