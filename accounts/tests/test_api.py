"""Partner API: accounts list / detail / entries, by persona, with filters and pages."""

from __future__ import annotations

import pytest

from bankcore.testing.books import world_snapshot
from bankcore.testing.personas import api_client_for, api_user

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

URL = "/api/v1/accounts/"
PROBLEM = "application/problem+json"


def numbers(response):
    return [account["number"] for account in response.json()["results"]]


def test_detail_shows_balances_as_strings(api_world, actor):
    from transfers.services import transfer_create

    w = api_world
    transfer_create(actor=actor, source_account=w.a1.number, destination_account=w.c2.number, amount="10.50")
    response = w.a.get(f"{URL}{w.a1.number}/")
    assert response.status_code == 200
    data = response.json()
    assert data == {
        "number": w.a1.number,
        "ledger": "01",
        "holder": "Partner A one",
        "kind": "customer",
        "currency": "CNY",
        "status": "active",
        "posted": "989.50",
        "pending_debits": "0.00",
        "pending_credits": "0.00",
        "available": "989.50",
        "created_at": data["created_at"],
    }


def test_partner_sees_only_its_accounts(api_world):
    w = api_world
    assert w.a.get(f"{URL}{w.b1.number}/").status_code == 404
    foreign = w.a.get(f"{URL}{w.b1.number}/")
    assert foreign["Content-Type"] == PROBLEM
    assert foreign.json()["code"] == "account_not_found"
    assert w.b.get(f"{URL}{w.b1.number}/").status_code == 200
    assert w.s.get(f"{URL}{w.c2.number}/").status_code == 401  # staff have no door here
    assert w.a.get(f"{URL}{w.c2.number}/entries/").json()["code"] == "account_not_found"
    bad = w.a.get(f"{URL}12345/")
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_account_number"
    anonymous = w.anon.get(f"{URL}{w.a1.number}/")
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "not_authenticated"


def test_staff_in_any_role_or_none_see_no_account(api_world, make_staff):
    w = api_world
    before = world_snapshot(w.a1, w.a2, w.b1, w.c2)
    for staff in (make_staff("outsider"), make_staff("teller"), make_staff("auditor")):
        client = api_client_for(staff)  # a token minted for them: the API is for partners
        for path in (URL, *(f"{URL}{a.number}/{end}" for a in (w.a1, w.c2) for end in ("", "entries/"))):
            response = client.get(path)
            assert response.status_code == 401, path
            assert response["Content-Type"] == PROBLEM
            assert response.json()["code"] == "token_not_valid", path
    assert world_snapshot(w.a1, w.a2, w.b1, w.c2) == before


def test_list_by_persona(api_world):
    w = api_world
    assert numbers(w.a.get(URL)) == sorted([w.a1.number, w.a2.number])
    assert numbers(w.b.get(URL)) == [w.b1.number]
    assert w.s.get(URL).status_code == 401
    nobody = api_client_for(api_user("partner-without-accounts"))
    assert numbers(nobody.get(URL)) == []
    assert w.anon.get(URL).status_code == 401


def test_list_filters(api_world, actor):
    from accounts.services import account_freeze

    w = api_world
    account_freeze(actor=actor, number=w.a2.number, reason="test")
    assert numbers(w.a.get(URL, {"ledger": "02"})) == [w.a2.number]
    assert numbers(w.a.get(URL, {"status": "frozen"})) == [w.a2.number]
    assert numbers(w.a.get(URL, {"status": "active"})) == [w.a1.number]
    assert numbers(w.a.get(URL, {"currency": "USD"})) == []
    wide = api_client_for(api_user("partner-wide", links=tuple(a.number for a in (w.a1, w.a2, w.b1, w.c2))))
    wide_active_02 = numbers(wide.get(URL, {"ledger": "02", "status": "active"}))
    assert wide_active_02 == [w.c2.number]  # a2 is frozen
    # after and before together: the accounts between them
    assert numbers(wide.get(URL, {"after": w.a1.number, "before": w.a2.number})) == sorted(
        n for n in numbers(wide.get(URL, {"limit": 200})) if w.a1.number < n < w.a2.number
    )
    for params, code in [
        ({"status": "sleeping"}, "validation_error"),
        ({"currency": "yen"}, "validation_error"),
        ({"after": "1"}, "validation_error"),  # a position: any 14 digits
        ({"limit": "500"}, "validation_error"),
        ({"limit": "x"}, "validation_error"),
        ({"sort": "holder"}, "unknown_field"),
    ]:
        response = w.a.get(URL, params)
        assert response.status_code == 400, params
        assert response["Content-Type"] == PROBLEM
        assert response.json()["code"] == code, params


@pytest.mark.ledgers3
def test_list_pages_forward_and_back_across_ledgers(api_world, make_account, ledgers):
    w = api_world
    extra = [make_account(ledger, holder=f"More {ledger}") for ledger in ledgers * 2]
    every = sorted(a.number for a in [w.a1, w.a2, w.b1, w.c2, *extra])
    wide = api_client_for(api_user("partner-wide", links=tuple(every)))
    listed = numbers(wide.get(URL, {"limit": 200}))
    assert listed == every

    seen: list[str] = []
    page = wide.get(URL, {"limit": 3}).json()
    assert page["previous"] is None
    pages = 0
    while True:
        seen += [a["number"] for a in page["results"]]
        pages += 1
        if not page["next"]:
            break
        page = wide.get(page["next"]).json()
    assert seen == listed
    assert pages == -(-len(listed) // 3)
    # and back from the last page
    back = wide.get(page["previous"]).json() if page["previous"] else None
    if back is not None:
        assert [a["number"] for a in back["results"]] == seen[-len(page["results"]) - 3 : -len(page["results"])]


def test_entries_newest_first_with_pages_and_dates(api_world, actor):
    from transfers.services import transfer_create

    w = api_world
    for n in range(4):
        transfer_create(actor=actor, source_account=w.a1.number, destination_account=w.a2.number, amount=f"{n + 1}.00")
    url = f"{URL}{w.a1.number}/entries/"
    entries = w.a.get(url).json()["results"]
    assert [e["amount"] for e in entries] == ["-4.00", "-3.00", "-2.00", "-1.00", "1000.00"]
    assert entries[0]["balance_after"] == "990.00"
    assert entries[-1]["kind"] == "deposit"

    first = w.a.get(url, {"limit": 2}).json()
    second = w.a.get(first["next"]).json()
    third = w.a.get(second["next"]).json()
    assert [e["id"] for e in first["results"] + second["results"] + third["results"]] == [e["id"] for e in entries]
    assert third["next"] is None

    assert w.a.get(url, {"created_to": "2000-01-01"}).json()["results"] == []
    assert len(w.a.get(url, {"created_from": "2000-01-01"}).json()["results"]) == 5
    assert w.a.get(url, {"created_from": "3000-01-01T00:00:00+08:00"}).json()["results"] == []
    for params in ({"created_from": "soon"}, {"created_to": "99999-01-01"}, {"limit": "-1"}, {"x": "1"}):
        response = w.a.get(url, params)
        assert response.status_code == 400, params
        assert response["Content-Type"] == PROBLEM
    assert w.a.get(url, {"cursor": "bad"}).json()["code"] == "not_found"
    assert w.b.get(url).status_code == 404


def test_entries_by_persona(api_world, make_staff):
    w = api_world
    url = f"{URL}{w.b1.number}/entries/"  # partner B's account
    before = world_snapshot(w.a1, w.a2, w.b1, w.c2)
    # Staff, flagged or by a permission to move money, read nothing here: the back office is theirs.
    clerk = api_user("clerk", permissions=("transfers.view_transfer", "transfers.add_transfer"))
    for client in (w.s, api_client_for(make_staff("teller")), api_client_for(clerk)):
        assert client.get(url).status_code == 401
    assert w.b.get(url).json()["results"][0]["amount"] == "500.00"
    for client in (w.a,):
        response = client.get(url)
        assert response.status_code == 404
        assert response["Content-Type"] == PROBLEM
        assert response.json()["code"] == "account_not_found"
    anonymous = w.anon.get(url)
    assert anonymous.status_code == 401
    assert anonymous["Content-Type"] == PROBLEM
    assert anonymous.json()["code"] == "not_authenticated"
    assert world_snapshot(w.a1, w.a2, w.b1, w.c2) == before
