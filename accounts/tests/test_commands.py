"""The first people of a deployment: staff in a role (``create_staff``), partners
(``partner_create``, ``partner_link``, ``partner_rotate``, ``partner_deactivate``) and the admin's
partner page. Every refusal leaves users, links and audit events as they were."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from accounts.models import PartnerAccountLink
from accounts.numbers import account_number_make
from audit.models import AuditEvent
from audit.roles import role_permits
from bankcore.testing.books import balances, number_of
from bankcore.testing.personas import STAFF_PASSWORD, api_client_for

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

TOKEN = "/api/v1/auth/token/"
GOOD_PASSWORD = "violet-kestrel-harbour-91"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def world() -> tuple[list[tuple[str, bool, bool]], list[tuple[str, str]], int]:
    users = sorted(User.objects.values_list("username", "is_active", "is_staff"))
    links = sorted(PartnerAccountLink.objects.values_list("user__username", "account_number"))
    return users, links, AuditEvent.objects.count()


def refused(*args: str) -> str:
    before = world()
    with pytest.raises(CommandError) as error:
        run(*args)
    assert world() == before
    return str(error.value)


def password_file(tmp_path, text: str) -> str:
    path = tmp_path / "password"
    path.write_text(text + "\n")
    return str(path)


# --- Staff -----------------------------------------------------------------------------------------


def test_create_staff_makes_a_teller_who_may_move_money(tmp_path):
    output = run("create_staff", "alice", "--role", "teller", "--password-file", password_file(tmp_path, GOOD_PASSWORD))

    assert "alice created as teller" in output
    alice = User.objects.get(username="alice")
    assert alice.is_staff and not alice.is_superuser and alice.check_password(GOOD_PASSWORD)
    assert list(alice.groups.values_list("name", flat=True)) == ["teller"]
    assert role_permits(alice, "transfers.add_transfer", "accounts.handle_cash")
    assert not role_permits(alice, "transfers.approve_approval")
    event = AuditEvent.objects.get(action="staff.created")
    assert event.changes == {"username": "alice", "role": "teller"} and GOOD_PASSWORD not in str(event.changes)
    # and she logs in to the back office
    assert Client().login(username="alice", password=GOOD_PASSWORD)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "supervisor", "--password-file", "{weak}"], "weak_password"),
        (["--role", "teller", "--password-file", "{missing}"], "--password-file"),
        (["--role", "teller"], "give --password-file"),  # no terminal to prompt on
    ],
    ids=["weak-password", "unreadable-file", "no-terminal"],
)
def test_create_staff_refusals_change_nothing(tmp_path, args, message):
    weak = password_file(tmp_path, "password")
    args = [a.replace("{weak}", weak).replace("{missing}", str(tmp_path / "nope")) for a in args]
    assert message in refused("create_staff", "bob", *args)


def test_create_staff_refuses_a_taken_name_and_an_unknown_role(tmp_path, make_staff):
    make_staff("teller", "carol")
    good = password_file(tmp_path, GOOD_PASSWORD)
    assert "username_taken" in refused("create_staff", "Carol", "--role", "auditor", "--password-file", good)
    assert "invalid choice" in refused("create_staff", "dave", "--role", "admin", "--password-file", good)
    assert "invalid_username" in refused("create_staff", "da ve!", "--role", "auditor", "--password-file", good)


# --- Partners --------------------------------------------------------------------------------------


def credentials(output: str) -> tuple[str, str]:
    fields = dict(
        line.strip().split(": ", 1)
        for line in output.splitlines()
        if line.strip().startswith(("username:", "password:"))
    )
    return fields["username"], fields["password"]


def test_a_partner_onboarded_by_commands_makes_its_first_transfer(make_account, ledgers):
    source, destination = make_account(ledgers[0], "100.00"), make_account(ledgers[-1])

    username, password = credentials(run("partner_create", "acme-pay"))
    assert "linked" in run("partner_link", "acme-pay", source.number)

    token = api_client_for().post(TOKEN, {"username": username, "password": password}, format="json")
    assert token.status_code == 200, token.content
    client = api_client_for()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.json()['access']}", HTTP_IDEMPOTENCY_KEY="first")
    created = client.post(
        "/api/v1/transfers/",
        {"source_account": source.number, "destination_account": destination.number, "amount": "10.00"},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert balances(source, destination) == [Decimal("90.00"), Decimal("10.00")]
    # the partner may not debit an account that is not linked to it
    other = client.post(
        "/api/v1/transfers/",
        {"source_account": destination.number, "destination_account": source.number, "amount": "1.00"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="second",
    )
    assert other.status_code in {403, 404}
    assert balances(source, destination) == [Decimal("90.00"), Decimal("10.00")]
    actions = list(AuditEvent.objects.filter(action__startswith="partner.").values_list("action", flat=True))
    assert sorted(actions) == ["partner.created", "partner.linked"]


def test_partner_link_checks_every_number_before_linking_any(make_account, ledgers):
    good = make_account(ledgers[0], "5.00")
    run("partner_create", "acme-pay")
    from accounts.models import Account

    cash = Account.objects.using(ledgers[0]).filter(kind=Account.Kind.INTERNAL).first()

    assert "invalid_account_number" in refused("partner_link", "acme-pay", good.number, "12345")
    unknown = account_number_make(ledger_code=settings.LEDGERS[ledgers[0]], serial=9_999_999)
    assert "account_not_found" in refused("partner_link", "acme-pay", good.number, unknown)
    if cash is not None:
        assert "internal_account" in refused("partner_link", "acme-pay", good.number, number_of(cash))
    assert "partner_not_found" in refused("partner_link", "nobody", good.number)


def test_partner_link_refuses_staff(make_account, make_staff, ledgers):
    account = make_account(ledgers[0])
    make_staff("teller", "tina")
    assert "not_a_partner" in refused("partner_link", "tina", account.number)
    assert "not_a_partner" in refused("partner_rotate", "tina")
    assert "not_a_partner" in refused("partner_deactivate", "tina")


def test_partner_create_with_a_bad_link_creates_nothing(make_account, ledgers):
    assert "invalid_account_number" in refused("partner_create", "acme-pay", "--link", "nope")
    assert "username_taken" not in refused("partner_create", "x y", "--link", make_account(ledgers[0]).number)


def test_rotation_and_deactivation_end_the_partners_tokens(make_account, ledgers):
    account = make_account(ledgers[0], "5.00")
    username, old = credentials(run("partner_create", "acme-pay", "--link", account.number))
    partner = User.objects.get(username=username)
    client = api_client_for(partner)
    assert client.get(f"/api/v1/accounts/{account.number}/").status_code == 200

    new = run("partner_rotate", "acme-pay").split("password: ")[1].strip()
    assert new != old
    assert client.get(f"/api/v1/accounts/{account.number}/").status_code == 401
    anonymous = api_client_for()
    assert anonymous.post(TOKEN, {"username": username, "password": old}, format="json").status_code == 401
    assert anonymous.post(TOKEN, {"username": username, "password": new}, format="json").status_code == 200

    run("partner_deactivate", "acme-pay")
    assert anonymous.post(TOKEN, {"username": username, "password": new}, format="json").status_code == 401
    assert "already" in run("partner_deactivate", "acme-pay")
    run("partner_deactivate", "acme-pay", "--activate")
    assert User.objects.get(username=username).is_active
    actions = sorted(AuditEvent.objects.filter(action__startswith="partner.").values_list("action", flat=True))
    assert actions == [
        "partner.activated",
        "partner.created",
        "partner.deactivated",
        "partner.linked",
        "partner.password_rotated",
    ]


# --- The admin's partner page -----------------------------------------------------------------------


def admin_client() -> Client:
    User.objects.create_superuser("root", password=STAFF_PASSWORD)
    client = Client()
    assert client.login(username="root", password=STAFF_PASSWORD)
    return client


def test_admin_creates_a_partner_shows_its_password_once_and_links_an_account(make_account, ledgers):
    account = make_account(ledgers[0])
    client = admin_client()

    created = client.post("/admin/accounts/partneraccountlink/partners/", {"name": "acme-pay"})
    assert created.status_code == 200 and "no-store" in created["Cache-Control"]
    password = created.context["credential"].password
    assert User.objects.get(username="acme-pay").check_password(password)
    # the list shows the partner, never a password
    listing = client.get("/admin/accounts/partneraccountlink/partners/")
    assert b"acme-pay" in listing.content and password.encode() not in listing.content

    partner = User.objects.get(username="acme-pay")
    linked = client.post(
        "/admin/accounts/partneraccountlink/add/", {"user": partner.pk, "account_number": account.number}
    )
    assert linked.status_code == 302, linked.content
    assert PartnerAccountLink.objects.filter(user=partner, account_number=account.number).exists()

    rotated = client.post(f"/admin/accounts/partneraccountlink/partners/{partner.pk}/rotate/")
    new = rotated.context["credential"].password
    assert new != password and User.objects.get(pk=partner.pk).check_password(new)

    client.post(f"/admin/accounts/partneraccountlink/partners/{partner.pk}/active/", {"active": "0"})
    assert not User.objects.get(pk=partner.pk).is_active

    link = PartnerAccountLink.objects.get(user=partner)
    client.post(f"/admin/accounts/partneraccountlink/{link.pk}/delete/", {"post": "yes"})
    assert not PartnerAccountLink.objects.filter(user=partner).exists()
    assert "partner.unlinked" in set(AuditEvent.objects.values_list("action", flat=True))


def test_admin_refuses_a_bad_link_and_a_teller(make_account, make_staff, ledgers):
    client = admin_client()
    run("partner_create", "acme-pay")
    partner = User.objects.get(username="acme-pay")
    before = world()

    bad = client.post("/admin/accounts/partneraccountlink/add/", {"user": partner.pk, "account_number": "12345"})
    assert bad.status_code == 200 and b"invalid_account_number" in bad.content
    assert world() == before

    make_staff("teller", "tina")
    teller = Client()
    assert teller.login(username="tina", password=STAFF_PASSWORD)
    before = world()
    assert teller.post("/admin/accounts/partneraccountlink/partners/", {"name": "evil"}).status_code == 403
    assert teller.post(f"/admin/accounts/partneraccountlink/partners/{partner.pk}/rotate/").status_code == 403
    assert world() == before
