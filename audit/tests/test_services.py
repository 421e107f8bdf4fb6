"""Every money movement and state change leaves an audit event naming who, when, through which
channel, from which address and in which request — whatever the door — and the audit file holds
the same stream (and the request bodies) with the sensitive fields masked."""

import json
from typing import Any

import pytest
from auditlog.diff import model_instance_diff
from auditlog.models import LogEntry
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import Account
from accounts.services import account_freeze
from audit.models import AuditEvent
from bankcore.actors import Actor, Channel
from bankcore.masking import MASK, mask
from bankcore.testing.backoffice import post_reviewed
from bankcore.testing.personas import STAFF_PASSWORD
from bankcore.testing.processes import run_manage
from transfers.models import Transfer
from transfers.services import transfer_create
from transfers.tasks import recover_transfers

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def audit_file(settings, tmp_path):
    settings.AUDIT_LOG_FILE = tmp_path / "audit.log"
    settings.AUDIT_LOG_ENABLED = True

    def lines() -> list[dict]:
        path = settings.AUDIT_LOG_FILE
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    return lines


def _teller_deposits(make_staff, make_account, **headers: str) -> tuple[Any, AuditEvent]:
    """A teller's deposit of 25.00 through the admin from 203.0.113.7: the teller and its event."""
    teller = make_staff("teller")
    bob = make_account("db2", "10.00")
    client = Client(REMOTE_ADDR="203.0.113.7")
    client.force_login(teller)
    response = post_reviewed(
        client,
        reverse("admin:accounts_account_deposit", args=(bob.number,)),
        {"amount": "25.00", "reference": "counter"},
        headers=headers,
    )
    assert response.status_code == 302
    return teller, AuditEvent.objects.get(action="transfer.completed", changes__kind="deposit", changes__amount="25.00")


def test_admin_channel_names_the_teller_the_address_and_the_request(make_staff, make_account, audit_file):
    teller, event = _teller_deposits(make_staff, make_account, **{"X-Request-ID": "req-admin-0001"})

    assert (event.actor_id, event.actor_name, event.channel) == (teller.pk, "teller", Channel.ADMIN)
    assert (event.ip, event.request_id) == ("203.0.113.7", "req-admin-0001")
    transfer = Transfer.objects.get(pk=event.object_id)
    assert (transfer.channel, transfer.created_by_id) == (Channel.ADMIN, teller.pk)
    # The file: the request (its body, never the response's) and the event, tied by the request id.
    lines = [line for line in audit_file() if line["request_id"] == "req-admin-0001"]
    # The last request is the one that confirmed the review (the first showed it).
    request = [line for line in lines if line["type"] == "request"][-1]
    assert request["body"]["amount"] == "25.00" and request["status"] == 302 and request["user"] == "teller"
    assert "csrfmiddlewaretoken" not in request["body"] and "response" not in request
    assert any(line["type"] == "event" and line["action"] == "transfer.completed" for line in lines)


@pytest.mark.parametrize(
    ("real_ip", "recorded"),
    [
        ("198.51.100.20", "198.51.100.20"),  # nginx's X-Real-IP: the client
        (" 2001:DB8::1 ", "2001:db8::1"),
        ("not-an-address", "203.0.113.7"),  # not an address: the peer's
        ("1" * 100, "203.0.113.7"),  # could not even be stored
        ("fe80::1%" + "x" * 40, "203.0.113.7"),  # an address, but longer than the column
        ("", "203.0.113.7"),
    ],
)
def test_the_address_recorded_is_an_address(make_staff, make_account, settings, real_ip, recorded):
    settings.TRUSTED_PROXIES = ["203.0.113.7/32"]  # the peer is the proxy (nginx)
    _, event = _teller_deposits(make_staff, make_account, **{"X-Real-IP": real_ip})
    assert event.ip == recorded


def test_a_forwarded_address_from_a_peer_that_is_no_proxy_is_not_believed(make_staff, make_account):
    _, event = _teller_deposits(make_staff, make_account, **{"X-Real-IP": "198.51.100.20"})
    assert event.ip == "203.0.113.7"


def test_api_channel_is_recorded_as_such(make_staff, make_account):
    partner = make_staff("outsider", "partner-app")
    alice, bob = make_account("db1", "100.00"), make_account("db1", "0.00")
    actor = Actor.for_user(partner, channel=Channel.API, ip="198.51.100.9", request_id="req-api-0001")
    transfer = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="5.00")
    event = AuditEvent.objects.get(action="transfer.completed", object_id=str(transfer.id))
    assert (event.channel, event.actor_id, event.ip, event.request_id) == (
        Channel.API,
        partner.pk,
        "198.51.100.9",
        "req-api-0001",
    )


def test_command_channel(make_account):
    make_account("db1", "0.00")
    result = run_manage(
        "seed_demo", "--accounts-per-ledger", "1", "--opening-balance", "10.00", DEMO_PASSWORD="x-y-z-12345"
    )
    assert result.returncode == 0, result.stderr
    events = AuditEvent.objects.filter(actor_name="seed_demo")
    assert events.filter(action="account.opened").count() >= 2
    assert set(events.values_list("channel", flat=True)) == {Channel.COMMAND}


def test_task_channel(make_account, make_stuck_transfer):
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    transfer = make_stuck_transfer(alice, bob)
    recover_transfers()
    event = AuditEvent.objects.get(action="transfer.aborted", object_id=str(transfer.id))
    assert (event.channel, event.actor_name) == (Channel.TASK, "celery-recovery")


def test_state_changes_are_audited_with_what_changed(actor, make_account):
    bob = make_account("db2", "0.00")
    account_freeze(actor=actor, number=bob.number, reason="court order")
    event = AuditEvent.objects.get(action="account.frozen", object_id=bob.number)
    assert event.changes == {"status": ["active", "frozen"], "reason": "court order"}
    assert event.ledger == "db2"


def test_auditlog_records_accounts_and_users(make_staff, make_account):
    bob = make_account("db2", "0.00", holder="Bob Logged")
    assert LogEntry.objects.get_for_model(Account).filter(object_repr__contains="Bob Logged").exists()
    make_staff("teller", "new-teller")
    user_entry = LogEntry.objects.filter(object_repr="new-teller").first()
    assert user_entry is not None and "password" not in json.dumps(user_entry.changes)
    assert bob.number


def test_auditlog_records_each_transfer_as_auditlog_itself_would(make_staff, make_account):
    """The engine inserts transfers with its own SQL, so it writes their auditlog "created" entry
    itself: the same changes auditlog's own diff gives, the actor and address of the request."""
    teller = make_staff("teller")
    alice, bob = make_account("db1", "50.00"), make_account("db2")
    actor = Actor.for_user(teller, channel=Channel.ADMIN, ip="198.51.100.4")
    made = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="5.00")

    entry = LogEntry.objects.get_for_object(made).get()
    assert entry.action == LogEntry.Action.CREATE and entry.actor_id == teller.pk
    assert entry.remote_addr == "198.51.100.4" and entry.object_repr.startswith("transfer ")
    # As accepted: the diff of a transfer as it was at accept (PENDING, no finish time).
    accepted = Transfer.objects.get(pk=made.pk)
    accepted.status, accepted.committed_at, accepted.finished_at = Transfer.Status.PENDING, None, None
    assert entry.changes == json.loads(json.dumps(model_instance_diff(None, accepted)))
    assert "request_hash" not in entry.changes  # excluded by the registration


def test_auditlog_records_role_and_permission_changes(make_staff):
    from django.contrib.auth.models import Group, Permission, User

    teller = make_staff("teller", "promoted")
    supervisor = Group.objects.get(name="supervisor")
    user_entries = LogEntry.objects.get_for_model(User).filter(object_id=teller.pk)
    before = user_entries.count()

    # when a teller is put in the supervisor group, then taken out of the teller group
    teller.groups.add(supervisor)
    teller.groups.remove(Group.objects.get(name="teller"))

    added, removed = user_entries.order_by("id")[before:]
    assert added.action == LogEntry.Action.UPDATE
    assert added.changes_dict["groups"] == {"type": "m2m", "operation": "add", "objects": ["supervisor"]}
    assert removed.changes_dict["groups"] == {"type": "m2m", "operation": "delete", "objects": ["teller"]}

    # A permission given to a user directly, or to a role's group, is logged as well.
    permission = Permission.objects.get(codename="approve_approval")
    teller.user_permissions.add(permission)
    assert user_entries.latest("id").changes_dict["user_permissions"]["operation"] == "add"
    auditor = Group.objects.get(name="auditor")
    auditor.permissions.add(permission)
    entry = LogEntry.objects.get_for_model(Group).filter(object_id=auditor.pk).latest("id")
    assert entry.changes_dict["permissions"] == {"type": "m2m", "operation": "add", "objects": [str(permission)]}


def test_masking_of_the_seeds_sensitive_fields():
    record = {
        "password": "hunter2",
        "new_password1": "hunter3",
        "Authorization": "Bearer abc",
        "account": "01000000000742",
        "text": "from 01000000000742 to 02000000001130, thanks",
        "posted": "1000.00",
        "balance_after": "90.00",
        "available": None,
        "nested": [{"pending_debits": "5.00", "amount": "5.00"}],
    }
    masked = mask(record)
    assert "password" not in masked and "new_password1" not in masked and "Authorization" not in masked
    assert masked["account"] == "**********0742"
    assert masked["text"] == "from **********0742 to **********1130, thanks"
    assert masked["posted"] == MASK and masked["balance_after"] == MASK and masked["available"] is None
    assert masked["nested"] == [{"pending_debits": MASK, "amount": "5.00"}]


def test_the_audit_file_never_holds_a_password_a_full_number_or_a_balance(make_staff, make_account, audit_file):
    make_staff("teller")
    alice = make_account("db1", "500.00")
    client = Client()
    # A login through the form (its password must never reach the file), then a withdrawal.
    response = client.post(
        reverse("admin:login"), {"username": "teller", "password": STAFF_PASSWORD, "next": "/admin/"}
    )
    assert response.status_code == 302
    post_reviewed(client, reverse("admin:accounts_account_withdraw", args=(alice.number,)), {"amount": "20.00"})

    text = "\n".join(json.dumps(line) for line in audit_file())
    assert STAFF_PASSWORD not in text
    assert alice.number not in text and alice.number[-4:] in text
    assert "480.00" not in text  # the balance after the withdrawal
    login = next(line for line in audit_file() if line.get("path") == reverse("admin:login"))
    assert login["body"] == {"username": "teller", "next": "/admin/"}


def test_auditlog_entries_saved_in_a_request_carry_its_user_and_address(make_staff):
    """django-auditlog's middleware gives each request its own context, also when requests run at
    once on threads, and none outside one."""
    import threading

    from auditlog.middleware import AuditlogMiddleware
    from django.contrib.auth.models import Group
    from django.test import RequestFactory

    users = [make_staff("teller", f"mw-teller-{i}") for i in range(4)]
    barrier = threading.Barrier(len(users))

    def save_group(request):
        barrier.wait(timeout=10)  # every request's context is set before any group is saved
        Group.objects.create(name=f"mw-group-{request.user.username}")
        from django.http import HttpResponse

        return HttpResponse("ok")

    middleware = AuditlogMiddleware(save_group)

    def one(i: int) -> None:
        from django.db import connections

        request = RequestFactory().post("/admin/", REMOTE_ADDR=f"203.0.113.{i + 1}")
        request.user = users[i]
        try:
            middleware(request)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(users))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, user in enumerate(users):
        group = Group.objects.get(name=f"mw-group-{user.username}")
        entry = LogEntry.objects.get_for_object(group).get()
        assert (entry.actor_id, entry.remote_addr) == (user.pk, f"203.0.113.{i + 1}")

    outside = Group.objects.create(name="mw-group-outside")
    entry = LogEntry.objects.get_for_object(outside).get()
    assert entry.actor_id is None and entry.remote_addr is None


def test_the_audit_pages_say_what_happened_in_words_who_by_name_and_when_with_the_zone(make_staff, make_account):
    teller, event = _teller_deposits(make_staff, make_account)
    teller.first_name, teller.last_name = "Tina", "Teller"
    teller.save()
    auditor = Client()
    auditor.force_login(make_staff("auditor"))

    listing = auditor.get(reverse("admin:audit_auditevent_changelist"))
    html = listing.content.decode()
    # Words, the code kept as the tooltip; the teller by name, the login as the tooltip.
    assert '<span title="transfer.completed" class="bo-action">Money moved</span>' in html
    assert '<span title="teller">Tina Teller</span>' in html and ">back office<" in html
    # The filters offer words too, never the codes alone.
    filters = {
        spec.title: [choice["display"] for choice in spec.choices(listing.context["cl"])]
        for spec in listing.context["cl"].filter_specs
    }
    assert "Money moved" in filters["what happened"] and "transfer.completed" not in filters["what happened"]
    assert "back office" in filters["channel"] and "Tina Teller" in filters["actor"]
    # Every time with its zone: the list's, the page's.
    local = timezone.localtime(event.created_at)
    assert f"{local:%Y-%m-%d %H:%M:%S} {local:%z}" in html
    page = auditor.get(reverse("admin:audit_auditevent_change", args=(event.pk,))).content.decode()
    assert f"{local:%Y-%m-%d %H:%M:%S} {local:%z}" in page
    assert "Money moved" in page and "transfer.completed" in page and "Tina Teller" in page
