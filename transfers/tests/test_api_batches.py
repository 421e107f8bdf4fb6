"""Partner API: batches of transfers — each item's outcome, refusals per item with nothing moved
for them, linked chains, replay and key reuse, the size limit, partner scoping, reading back."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bankcore.testing.books import balances, world_snapshot
from transfers.models import Transfer, TransferBatch

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

URL = "/api/v1/transfer-batches/"
PROBLEM = "application/problem+json"


def post(client, items, key="batch-1"):
    return client.post(URL, {"items": items}, format="json", HTTP_IDEMPOTENCY_KEY=key)


def item(client_id, src, dst, amount="10.00", **extra):
    return {
        "client_id": client_id,
        "source_account": src.number,
        "destination_account": dst.number,
        "amount": amount,
        **extra,
    }


def everything(w):
    return world_snapshot(w.a1, w.a2, w.b1, w.c2)


def test_each_item_is_answered_and_refusals_move_nothing_for_them(api_world):
    w = api_world
    response = post(
        w.a,
        [
            item("one", w.a1, w.c2, "100.00"),
            item("two", w.a2, w.b1, "2000.00"),  # more than a2 holds
            item("three", w.a2, w.a1, "50.00", reference="rent"),
        ],
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Location"] == f"/api/v1/transfer-batches/{body['id']}/"
    assert body["item_count"] == 3 and body["totals"] == {"": "2150.00"}
    items = body["items"]
    assert [i["client_id"] for i in items] == ["one", "two", "three"]
    assert [i["status"] for i in items] == ["completed", "aborted", "completed"]
    assert [i["error"] and i["error"]["code"] for i in items] == [None, "insufficient_funds", None]
    assert items[1]["error"]["status"] == 422
    assert items[2]["transfer"]["reference"] == "rent"
    assert balances(w.a1, w.a2, w.b1, w.c2) == [
        Decimal("950.00"),
        Decimal("950.00"),
        Decimal("500.00"),
        Decimal("100.00"),
    ]
    batch = TransferBatch.objects.get(pk=body["id"])
    assert list(batch.transfers.order_by("batch_position").values_list("batch_position", "status")) == [
        (0, "completed"),
        (1, "aborted"),
        (2, "completed"),
    ]


def test_a_linked_chain_with_one_refusal_moves_nothing_of_the_chain(api_world):
    w = api_world
    before = everything(w)
    response = post(
        w.a,
        [
            item("c1", w.a1, w.c2, "100.00", linked=True),
            item("c2", w.a2, w.c2, "5000.00", linked=True),  # refused: the chain fails
            item("c3", w.a1, w.b1, "1.00"),
        ],
    )
    assert response.status_code == 201, response.content
    items = response.json()["items"]
    assert [i["error"]["code"] for i in items] == [
        "linked_transfer_failed",
        "insufficient_funds",
        "linked_transfer_failed",
    ]
    assert [i["status"] for i in items] == ["aborted"] * 3
    after = everything(w)
    assert after["accounts"] == before["accounts"] and after["entries"] == before["entries"]
    assert after["legs"] == before["legs"]


def test_another_partners_account_is_refused_per_item(api_world):
    w = api_world
    response = post(w.a, [item("mine", w.a1, w.c2, "10.00"), item("theirs", w.b1, w.c2, "10.00")])
    assert response.status_code == 201, response.content
    items = response.json()["items"]
    assert [i["status"] for i in items] == ["completed", "refused"]
    assert items[1]["error"]["code"] == "account_not_found" and items[1]["transfer"] is None
    assert balances(w.b1, w.c2) == [Decimal("500.00"), Decimal("10.00")]


def test_a_chain_with_another_partners_account_moves_nothing(api_world):
    w = api_world
    before = everything(w)
    response = post(w.a, [item("mine", w.a1, w.c2, "10.00", linked=True), item("theirs", w.b1, w.c2, "10.00")])
    assert response.status_code == 201, response.content
    assert [i["error"]["code"] for i in response.json()["items"]] == ["linked_transfer_failed", "account_not_found"]
    after = everything(w)
    assert after["accounts"] == before["accounts"] and after["entries"] == before["entries"]


def test_a_replay_answers_the_same_and_moves_nothing_more(api_world):
    w = api_world
    items = [item("one", w.a1, w.c2, "10.00"), item("two", w.a1, w.c2, "9999.00")]
    first = post(w.a, items)
    assert first.status_code == 201
    moved = everything(w)
    again = post(w.a, items)
    assert again.status_code == 200 and again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    strip = lambda body: [(i["status"], i["error"], i["transfer"]["id"]) for i in body["items"]]  # noqa: E731
    assert strip(again.json()) == strip(first.json())
    assert all(i["replayed"] for i in again.json()["items"])
    assert everything(w) == moved


def test_the_batch_key_with_another_body_is_a_conflict(api_world):
    w = api_world
    assert post(w.a, [item("one", w.a1, w.c2, "10.00")]).status_code == 201
    before = everything(w)
    response = post(w.a, [item("one", w.a1, w.c2, "11.00")])
    assert response.status_code == 409 and response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "idempotency_key_reused"
    assert everything(w) == before


def test_more_than_a_thousand_items_are_refused_and_nothing_moves(api_world, settings):
    w = api_world
    before = everything(w)
    response = post(w.a, [item(f"i{n}", w.a1, w.c2, "0.01") for n in range(1001)])
    assert response.status_code == 400 and response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "batch_too_large"
    assert everything(w) == before
    assert not TransferBatch.objects.exists()


def test_a_thousand_items_are_taken(api_world):
    w = api_world
    response = post(w.a, [item(f"i{n}", w.a1, w.c2, "0.01", reference="x" * 100) for n in range(1000)])
    assert response.status_code == 201, response.content[:500]
    assert {i["status"] for i in response.json()["items"]} == {"completed"}
    assert balances(w.a1, w.c2) == [Decimal("990.00"), Decimal("10.00")]


@pytest.mark.parametrize(
    ("items", "code"),
    [
        ([], "validation_error"),
        ([{"client_id": "x", "source_account": "1", "destination_account": "2", "amount": "1"}], None),
        ("unknown", "unknown_field"),
        ("bad-linked", None),
    ],
)
def test_malformed_batches_are_refused_whole(api_world, items, code):
    w = api_world
    if items == "unknown":
        items = [{**item("x", w.a1, w.c2), "amout": "1.00"}]
    elif items == "bad-linked":
        items = [item("x", w.a1, w.c2, linked="yes")]
    before = everything(w)
    response = post(w.a, items)
    assert response.status_code == 400 and response["Content-Type"] == PROBLEM, response.content
    if code is not None:
        assert response.json()["code"] == code
    assert everything(w) == before
    assert not TransferBatch.objects.exists()


def test_two_items_with_one_client_id_are_refused_whole(api_world):
    w = api_world
    before = everything(w)
    response = post(w.a, [item("same", w.a1, w.c2), item("same", w.a1, w.c2)])
    assert response.status_code == 422 and response.json()["code"] == "duplicate_client_id"
    assert everything(w) == before
    assert not TransferBatch.objects.exists()


def test_staff_are_sent_to_the_back_office(api_world):
    w = api_world
    before = everything(w)
    response = post(w.s, [item("one", w.a1, w.c2)])
    assert response.status_code == 401
    assert everything(w) == before


def test_a_batch_reads_back_with_its_items_in_order(api_world):
    w = api_world
    created = post(w.a, [item("one", w.a1, w.c2, "1.00"), item("two", w.a1, w.c2, "5000.00")]).json()
    response = w.a.get(f"{URL}{created['id']}/")
    assert response.status_code == 200
    body = response.json()
    assert [(i["position"], i["status"], i["transfer"]["id"]) for i in body["items"]] == [
        (i["position"], i["status"], i["transfer"]["id"]) for i in created["items"]
    ]
    assert body["items"][1]["error"]["code"] == "insufficient_funds"
    assert w.b.get(f"{URL}{created['id']}/").status_code == 404
    assert w.a.get(f"{URL}00000000-0000-0000-0000-000000000000/").json()["code"] == "batch_not_found"
    assert Transfer.objects.filter(batch_id=created["id"]).count() == 2
