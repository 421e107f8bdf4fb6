"""The permission matrix of the back office, role by role, through the admin's own URLs. Every
refusal is a 403 that leaves everything as it was: balances, entries, transfers, approvals, audit."""

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from audit.roles import ROLES
from bankcore.actors import Actor, Channel
from conftest import world_snapshot
from transfers.approvals import approval_request
from transfers.models import Approval

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

ROLE_NAMES = ["teller", "supervisor", "auditor", "outsider"]


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
def world(make_staff, make_account):
    users = {role: make_staff(role) for role in ROLE_NAMES}
    alice = make_account("db1", "50000.00", holder="Alice Matrix")
    bob, carol = make_account("db2", "100.00"), make_account("db2", "0.00")
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
    return users, {"alice": alice, "bob": bob, "carol": carol, "ap1": approvals[0], "ap2": approvals[1]}


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


# (what, method, url, POST data, roles allowed) — in an order where each allowed action succeeds.
ACTIONS = [
    ("find", "get", lambda w: reverse("admin:accounts_account_find") + "?q=Matrix", None, ROLE_NAMES[:3]),
    (
        "account",
        "get",
        lambda w: reverse("admin:accounts_account_change", args=(w["alice"].number,)),
        None,
        ROLE_NAMES[:3],
    ),
    ("accounts", "get", lambda w: reverse("admin:accounts_account_changelist") + "?ledger=db2", None, ROLE_NAMES[:3]),
    (
        "approvals",
        "get",
        lambda w: reverse("admin:transfers_approval_changelist") + "?status__exact=pending",
        None,
        ROLE_NAMES[:3],
    ),
    ("stuck", "get", lambda w: reverse("admin:transfers_transfer_stuck"), None, ROLE_NAMES[:3]),
    ("audit trail", "get", lambda w: reverse("admin:audit_auditevent_changelist"), None, ["auditor"]),
    (
        "open account",
        "post",
        lambda w: reverse("admin:accounts_account_add"),
        lambda w: {"ledger": "db1", "holder": "New Customer", "currency": "CNY"},
        ["teller", "supervisor"],
    ),
    (
        "cash deposit",
        "post",
        lambda w: reverse("admin:accounts_account_deposit", args=(w["bob"].number,)),
        lambda w: {"amount": "50.00", "reference": "counter"},
        ["teller", "supervisor"],
    ),
    (
        "cash withdrawal",
        "post",
        lambda w: reverse("admin:accounts_account_withdraw", args=(w["alice"].number,)),
        lambda w: {"amount": "50.00"},
        ["teller", "supervisor"],
    ),
    (
        "new transfer",
        "post",
        lambda w: reverse("admin:transfers_transfer_add"),
        lambda w: {"source_account": w["alice"].number, "destination_account": w["bob"].number, "amount": "10.00"},
        ["teller", "supervisor"],
    ),
    (
        "approve",
        "post",
        lambda w: reverse("admin:transfers_approval_decide", args=(w["ap1"].pk,)),
        lambda w: {"decision": "approve"},
        ["supervisor"],
    ),
    (
        "reject",
        "post",
        lambda w: reverse("admin:transfers_approval_decide", args=(w["ap2"].pk,)),
        lambda w: {"decision": "reject", "reason": "customer not present"},
        ["supervisor"],
    ),
    (
        "freeze",
        "post",
        lambda w: reverse("admin:accounts_account_state", args=(w["bob"].number, "freeze")),
        lambda w: {"reason": "fraud check"},
        ["supervisor"],
    ),
    (
        "close",
        "post",
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


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_permission_matrix(world, role):
    users, w = world
    client = _client(users[role])
    accounts = (w["alice"], w["bob"], w["carol"])
    # Refusals first: each is a 403 and leaves everything as it was.
    for name, method, url, data, allowed in ACTIONS:
        if role in allowed:
            continue
        before = world_snapshot(*accounts)
        response = getattr(client, method)(url(w), data(w) if data else None)
        assert response.status_code == 403, (name, role, response.status_code)
        assert world_snapshot(*accounts) == before, f"{name}, refused to {role}, changed something"
    # Then what the role may do: it answers, and each change is really made.
    for name, method, url, data, allowed in ACTIONS:
        if role not in allowed:
            continue
        before = world_snapshot(*accounts)
        response = getattr(client, method)(url(w), data(w) if data else None)
        assert response.status_code in (200, 302), (name, role, response.status_code)
        if method == "post":
            assert world_snapshot(*accounts) != before, f"{name} by {role} changed nothing"
            assert not [m for m in client.get("/admin/").context["messages"] if m.level_tag == "error"], name


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
