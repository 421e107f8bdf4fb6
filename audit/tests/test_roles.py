"""The permission matrix, role by role, through the admin's own URLs and through the partner API.
Every refusal leaves everything as it was: balances, entries, transfers, approvals, audit."""

from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from audit.roles import ROLES
from bankcore.actors import Actor, Channel
from bankcore.testing.backoffice import post_reviewed
from bankcore.testing.books import world_snapshot
from bankcore.testing.personas import api_client_for, api_user
from transfers.approvals import approval_request
from transfers.models import Approval
from transfers.services import transfer_cash_movement, transfer_create

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

ROLE_NAMES = ["teller", "supervisor", "auditor", "outsider"]
# A superuser in no role (as docs/backoffice.md says they are): it reads what Django lets it, and acts on nothing.
PERSONAS = [*ROLE_NAMES, "superuser"]
READERS = [*ROLE_NAMES[:3], "superuser"]


def test_roles_are_groups_with_exactly_their_permissions(make_staff):
    for role, permissions in ROLES.items():
        granted = set(Group.objects.get(name=role).permissions.values_list("content_type__app_label", "codename"))
        assert granted == {(app, codename) for app, _, codename, _ in permissions}
    teller, supervisor, auditor = make_staff("teller"), make_staff("supervisor"), make_staff("auditor")
    assert teller.has_perms(["accounts.handle_cash", "transfers.add_transfer", "accounts.add_account"])
    assert not teller.has_perm("transfers.approve_approval") and not teller.has_perm("accounts.freeze_account")
    assert supervisor.has_perms(
        ["transfers.approve_approval", "accounts.freeze_account", "accounts.close_account", "transfers.run_recovery"]
    )
    assert auditor.has_perm("audit.view_auditevent")
    assert all(codename.startswith("view_") for _, _, codename, _ in ROLES["auditor"])
    assert not auditor.has_perm("accounts.handle_cash") and not auditor.has_perm("transfers.add_transfer")


@pytest.fixture
def world(make_staff, make_account, actor, api_throttle_reset):
    users = {role: make_staff(role) for role in ROLE_NAMES}
    users["superuser"] = User.objects.create_superuser("root", password="root-password-123")
    alice = make_account("db1", "50000.00", holder="Alice Matrix")
    # The two requests below hold 40,000.00 of it while they wait.
    transfer_cash_movement(actor=actor, kind="deposit", number=alice.number, amount="40000.00")
    bob, carol = make_account("db2", "100.00"), make_account("db2", "0.00")
    # A partner of the API with alice's and bob's accounts; a completed payment alice → bob.
    users["partner"] = api_user("partner", links=(alice.number, bob.number))
    paid = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="10.00")
    approvals = [
        approval_request(
            actor=Actor.for_user(users["teller"], channel=Channel.ADMIN),
            kind=Approval.Kind.TRANSFER,
            amount="20000.00",
            source_account=alice.number,
            destination_account=bob.number,
        )
        for _ in range(2)
    ]
    return users, {"alice": alice, "bob": bob, "carol": carol, "ap1": approvals[0], "ap2": approvals[1], "paid": paid}


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


# (what, method, url, POST data, roles allowed) — in an order where each allowed action succeeds.
ACTIONS = [
    ("find", "get", lambda w: reverse("admin:accounts_account_find") + "?q=Matrix", None, READERS),
    (
        "account",
        "get",
        lambda w: reverse("admin:accounts_account_change", args=(w["alice"].number,)),
        None,
        READERS,
    ),
    ("accounts", "get", lambda w: reverse("admin:accounts_account_changelist") + "?ledger=db2", None, READERS),
    (
        "approvals",
        "get",
        lambda w: reverse("admin:transfers_approval_changelist") + "?status__exact=pending",
        None,
        READERS,
    ),
    ("stuck", "get", lambda w: reverse("admin:transfers_transfer_stuck"), None, READERS),
    (
        "audit trail",
        "get",
        lambda w: reverse("admin:audit_auditevent_changelist"),
        None,
        ["auditor", "superuser"],
    ),
    (
        "open account",
        "confirm",
        lambda w: reverse("admin:accounts_account_add"),
        lambda w: {"ledger": "db1", "holder": "New Customer", "currency": "CNY"},
        ["teller", "supervisor"],
    ),
    (
        "cash deposit",
        "confirm",
        lambda w: reverse("admin:accounts_account_deposit", args=(w["bob"].number,)),
        lambda w: {"amount": "50.00", "reference": "counter"},
        ["teller", "supervisor"],
    ),
    (
        "cash withdrawal",
        "confirm",
        lambda w: reverse("admin:accounts_account_withdraw", args=(w["alice"].number,)),
        lambda w: {"amount": "50.00"},
        ["teller", "supervisor"],
    ),
    (
        "new transfer",
        "confirm",
        lambda w: reverse("admin:transfers_transfer_add"),
        lambda w: {"source_account": w["alice"].number, "destination_account": w["bob"].number, "amount": "10.00"},
        ["teller", "supervisor"],
    ),
    (
        "approve",
        "confirm",
        lambda w: reverse("admin:transfers_approval_decide", args=(w["ap1"].pk,)),
        lambda w: {"decision": "approve"},
        ["supervisor"],
    ),
    (
        "reject",
        "confirm",
        lambda w: reverse("admin:transfers_approval_decide", args=(w["ap2"].pk,)),
        lambda w: {"decision": "reject", "reason": "customer not present"},
        ["supervisor"],
    ),
    (
        "reverse",
        "confirm",
        lambda w: reverse("admin:transfers_transfer_reverse", args=(w["paid"].pk,)),
        lambda w: {"reference": "paid twice"},
        ["supervisor"],
    ),
    (
        "freeze",
        "confirm",
        lambda w: reverse("admin:accounts_account_state", args=(w["bob"].number, "freeze")),
        lambda w: {"reason": "fraud check"},
        ["supervisor"],
    ),
    (
        "unfreeze",
        "confirm",
        lambda w: reverse("admin:accounts_account_state", args=(w["bob"].number, "unfreeze")),
        lambda w: {"reason": "cleared"},
        ["supervisor"],
    ),
    (
        "close",
        "confirm",
        lambda w: reverse("admin:accounts_account_state", args=(w["carol"].number, "close")),
        lambda w: {"reason": "customer left"},
        ["supervisor"],
    ),
    (
        "run recovery",
        "post",
        lambda w: reverse("admin:transfers_transfer_stuck"),
        lambda w: {"transfer": ["00000000-0000-0000-0000-000000000000"]},
        ["supervisor"],
    ),
]


def _send(client, method, url, data):
    """GET, POST, or "confirm": a form carried out once its review is confirmed."""
    if method == "confirm":
        return post_reviewed(client, url, data)
    return getattr(client, method)(url, data)


@pytest.mark.parametrize("role", PERSONAS)
def test_permission_matrix(world, role):
    users, w = world
    client = _client(users[role])
    accounts = (w["alice"], w["bob"], w["carol"])
    # Refusals first: each is a 403 and leaves everything as it was.
    for name, method, url, data, allowed in ACTIONS:
        if role in allowed:
            continue
        before = world_snapshot(*accounts)
        response = _send(client, method, url(w), data(w) if data else None)
        assert response.status_code == 403, (name, role, response.status_code)
        assert world_snapshot(*accounts) == before, f"{name}, refused to {role}, changed something"
    # Then what the role may do: it answers, and each change is really made.
    for name, method, url, data, allowed in ACTIONS:
        if role not in allowed:
            continue
        before = world_snapshot(*accounts)
        response = _send(client, method, url(w), data(w) if data else None)
        assert response.status_code in (200, 302), (name, role, response.status_code)
        if method != "get":
            assert world_snapshot(*accounts) != before, f"{name} by {role} changed nothing"
            assert not [m for m in client.get("/admin/").context["messages"] if m.level_tag == "error"], name


TRANSFERS_URL = "/api/v1/transfers/"


def _payment(amount):
    return lambda w: {"source_account": w["alice"].number, "destination_account": w["bob"].number, "amount": amount}


# The partner API's door: (what, URL, body, {persona: (status, code) refused}); a persona not named
# may do it (201). The partner is linked to alice's and bob's accounts. Staff, in any role or none,
# and superusers have no door here (the back office is theirs): every action is a 401.
_NO_STAFF = {persona: (401, "token_not_valid") for persona in PERSONAS}
API_ACTIONS = [
    ("api transfer", lambda w: TRANSFERS_URL, _payment("10.00"), _NO_STAFF),
    (
        "api transfer above the threshold",
        lambda w: TRANSFERS_URL,
        _payment(str(settings.APPROVAL_THRESHOLD + Decimal("0.01"))),
        _NO_STAFF,
    ),
    (
        "api reverse",
        lambda w: f"{TRANSFERS_URL}{w['paid'].pk}/reverse/",
        lambda w: {"reference": "paid twice"},
        _NO_STAFF,
    ),
]


@pytest.mark.parametrize("persona", [*PERSONAS, "partner"])
def test_permission_matrix_through_the_api(world, persona):
    users, w = world
    client = api_client_for(users[persona])
    accounts = (w["alice"], w["bob"], w["carol"])
    for name, url, data, refused in API_ACTIONS:
        if persona not in refused:
            continue
        before = world_snapshot(*accounts)
        response = client.post(url(w), data(w), format="json", HTTP_IDEMPOTENCY_KEY=name.replace(" ", "-"))
        assert (response.status_code, response.json()["code"]) == refused[persona], (name, persona)
        assert world_snapshot(*accounts) == before, f"{name}, refused to {persona}, changed something"
    for name, url, data, refused in API_ACTIONS:
        if persona in refused:
            continue
        before = world_snapshot(*accounts)
        response = client.post(url(w), data(w), format="json", HTTP_IDEMPOTENCY_KEY=name.replace(" ", "-"))
        assert response.status_code == 201, (name, persona, response.content)
        after = world_snapshot(*accounts)
        assert after["accounts"] != before["accounts"] and after["approvals"] == before["approvals"], name


def test_nobody_edits_money_or_approvals_by_hand(world):
    users, w = world
    alice, bob, approval = w["alice"], w["bob"], w["ap1"]
    for role in ROLE_NAMES[:3]:
        client = _client(users[role])
        before = world_snapshot(alice, bob)
        change = reverse("admin:accounts_account_change", args=(alice.number,))
        response = client.post(change, {"holder": "Mallory", "posted": "99999999.00", "status": "active"})
        assert response.status_code == 403
        assert client.post(reverse("admin:transfers_approval_change", args=(approval.pk,)), {}).status_code == 403
        assert world_snapshot(alice, bob) == before
    page = _client(users["teller"]).get(reverse("admin:accounts_account_change", args=(alice.number,)))
    assert b'name="posted"' not in page.content and b'name="holder"' not in page.content
