"""The back office as a teller and a supervisor use it: find an account in any ledger, read its
page, move money through the forms (refusals shown as messages, nothing moved), four eyes through
the approval page, stuck transfers and recovery, the environment banner, login lockout."""

import re
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from accounts.models import Entry
from audit.models import AuditEvent
from bankcore.actors import Actor
from bankcore.errors import ApplicationError
from bankcore.testing.backoffice import post_reviewed
from bankcore.testing.books import balances, world_snapshot
from bankcore.testing.personas import STAFF_PASSWORD
from transfers.models import Approval, ReconciliationRun, Transfer
from transfers.reconciliation import reconciliation_run
from transfers.services import transfer_create

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


@pytest.mark.ledgers3
def test_one_search_finds_accounts_in_every_ledger(make_staff, make_account, ledgers):
    client = logged_in(make_staff("teller"))
    accounts = [make_account(ledger, holder=f"Zhou Needle {ledger}") for ledger in ledgers]
    make_account(ledgers[0], holder="Somebody Else")

    by_holder = client.get(reverse("admin:accounts_account_find"), {"q": "needle"})
    assert by_holder.status_code == 200
    assert [a.number for a in by_holder.context["results"]] == [a.number for a in accounts]
    last = accounts[-1]
    by_number = client.get(reverse("admin:accounts_account_find"), {"q": last.number})
    assert [a.number for a in by_number.context["results"]] == [last.number]
    frozen_only = client.get(reverse("admin:accounts_account_find"), {"q": "needle", "status": "frozen"})
    assert frozen_only.context["results"] == []
    # The list shows one ledger at a time; the ledger filter picks it.
    listing = client.get(reverse("admin:accounts_account_changelist"), {"ledger": ledgers[-1]})
    assert listing.status_code == 200 and last.number.encode() in listing.content
    assert accounts[0].number.encode() not in listing.content


def test_the_account_page_shows_balances_statement_and_transfers(make_staff, make_account, actor):
    client = logged_in(make_staff("teller"))
    alice, bob = make_account("db1", "1000.00", holder="Alice Page"), make_account("db2", "0.00")
    for n in range(30):
        transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount=f"{n + 1}.00")

    page = client.get(reverse("admin:accounts_account_change", args=(alice.number,)))

    assert page.status_code == 200
    html = page.content.decode()
    # Once each, grouped, with the currency; the statement signed as the transfers table is.
    assert 'id="balance-posted">535.00\u00a0CNY' in html and 'id="balance-available">535.00\u00a0CNY' in html
    assert 'id="balance-pending-debits"' not in html and "field-posted" not in html  # nothing held; no repeat
    assert "-30.00\u00a0CNY" in html and "+1,000.00\u00a0CNY" in html
    statement = page.context["statement"]
    assert statement.paginator.count == 31 and len(statement) == 25
    amounts = [e.amount for e in statement]
    assert amounts[0] == Decimal("-30.00") and amounts == sorted(amounts)  # newest (largest debit) first
    older = client.get(reverse("admin:accounts_account_change", args=(alice.number,)), {"page": 2})
    assert [e.amount for e in older.context["statement"]][-1] == Decimal("1000.00")  # the opening deposit
    assert len(page.context["transfers"]) == 31
    assert "New transfer" in html and "Cash deposit" in html and "Cash withdrawal" in html


def test_a_refusal_is_a_clear_message_and_moves_nothing(make_staff, make_account):
    client = logged_in(make_staff("teller"))
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    before = world_snapshot(alice, bob)
    entries = Entry.objects.using("db1").count()

    response = post_reviewed(
        client,
        reverse("admin:transfers_transfer_add"),
        {"source_account": alice.number, "destination_account": bob.number, "amount": "100.01"},
        follow=True,
    )
    # Beside the amount, in words, the code small beside them; the form kept as typed.
    assert response.status_code == 200 and messages_of(response) == []
    page = response.content.decode()
    errors = re.search(r'<ul class="errorlist" id="id_amount-errors">(.*?)</ul>', page, re.S)
    assert errors and "100.00 available" in errors.group(1) and "(insufficient_funds)" in errors.group(1)
    assert 'value="100.01"' in page
    typo = post_reviewed(
        client,
        reverse("admin:transfers_transfer_add"),
        {
            "source_account": alice.number[:-1] + str((int(alice.number[-1]) + 1) % 10),
            "destination_account": bob.number,
            "amount": "1.00",
        },
        follow=True,
    )
    errors = re.search(r'id="id_source_account-errors">(.*?)</ul>', typo.content.decode(), re.S)
    assert errors and "check digits" in errors.group(1)
    after = world_snapshot(alice, bob)
    assert after["accounts"] == before["accounts"] and Entry.objects.using("db1").count() == entries
    assert not Transfer.objects.filter(status=Transfer.Status.COMPLETED, amount=Decimal("100.01")).exists()


def test_four_eyes_through_the_admin(make_staff, make_account):
    teller, supervisor = make_staff("teller"), make_staff("supervisor")
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    amount = str(settings.APPROVAL_THRESHOLD + Decimal("0.01"))

    made = post_reviewed(
        logged_in(teller),
        reverse("admin:transfers_transfer_add"),
        {"source_account": alice.number, "destination_account": bob.number, "amount": amount},
        follow=True,
    )
    approval = Approval.objects.get()
    assert approval.status == Approval.Status.PENDING
    assert any(level == "warning" and "waits for a supervisor" in text for level, text in messages_of(made))
    assert balances(alice, bob) == [Decimal("30000.00"), Decimal("0.00")]
    # The maker's own page offers no decision; a forged POST is refused by the service.
    own = logged_in(teller).get(reverse("admin:transfers_approval_change", args=(approval.pk,)))
    assert b'id="approve"' not in own.content
    decide = reverse("admin:transfers_approval_decide", args=(approval.pk,))
    assert post_reviewed(logged_in(teller), decide, {"decision": "approve"}).status_code == 403

    checker = logged_in(supervisor)
    queue = checker.get(reverse("admin:transfers_approval_changelist"), follow=True)
    assert str(approval.pk).encode() in queue.content
    page = checker.get(reverse("admin:transfers_approval_change", args=(approval.pk,)))
    assert b'id="approve"' in page.content
    done = post_reviewed(checker, decide, {"decision": "approve"}, follow=True)
    assert any(level == "success" for level, _ in messages_of(done))
    approval.refresh_from_db()
    assert approval.status == Approval.Status.EXECUTED and approval.checker_id == supervisor.pk
    assert balances(alice, bob) == [Decimal("30000.00") - Decimal(amount), Decimal(amount)]


def test_stuck_transfers_and_recovery(make_staff, make_account, make_stuck_transfer):
    supervisor = make_staff("supervisor")
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    transfer = make_stuck_transfer(alice, bob)
    reconciliation_run(actor=Actor.system())
    client = logged_in(supervisor)

    page = client.get(reverse("admin:transfers_transfer_stuck"))
    assert [t.pk for t in page.context["stuck"]] == [transfer.pk]
    assert page.context["last_run"] == ReconciliationRun.objects.latest()
    assert b'id="run-recovery"' in page.content and b'id="last-reconciliation"' in page.content
    # The engine's status in words, its code as the tooltip.
    state = {"pending": "In progress — not yet decided", "committed": "Decided — finishing"}[transfer.status]
    assert f'<span title="{transfer.status}">{state}</span>' in page.content.decode()
    teller_page = logged_in(make_staff("teller")).get(reverse("admin:transfers_transfer_stuck"))
    assert b'id="run-recovery"' not in teller_page.content and teller_page.context["last_run"] is None

    done = client.post(reverse("admin:transfers_transfer_stuck"), {"transfer": [str(transfer.pk)]}, follow=True)

    assert any("transfers cancelled, their money released: 1" in text for _, text in messages_of(done))
    assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.ABORTED
    assert done.context["stuck"] == []
    event = AuditEvent.objects.get(action="recovery.run")
    assert event.actor_id == supervisor.pk and event.changes["transfers"] == [str(transfer.pk)]


def test_environment_banner_outside_production(make_staff, settings):
    client = logged_in(make_staff("auditor"))
    assert b'id="environment-banner"' in client.get("/admin/").content
    assert b"TEST ENVIRONMENT" in client.get("/admin/").content
    settings.BANKCORE_ENVIRONMENT = "production"
    assert b'id="environment-banner"' not in client.get("/admin/").content


def test_login_lockout_after_repeated_failures(make_staff, settings):
    make_staff("teller")
    client = Client()
    login = reverse("admin:login")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = client.post(login, {"username": "teller", "password": "wrong", "next": "/admin/"})
        assert response.status_code in (200, 429)
    locked = client.post(login, {"username": "teller", "password": STAFF_PASSWORD, "next": "/admin/"})
    assert locked.status_code == 429  # even the right password, until the cool-off ends
    assert "_auth_user_id" not in client.session
    other = Client().post(login, {"username": "nobody", "password": "x", "next": "/admin/"})
    assert other.status_code == 200


def test_sessions_live_in_redis_when_it_is_configured(make_staff):
    from django.core.cache import cache

    assert settings.REDIS_HOST and settings.SESSION_ENGINE == "django.contrib.sessions.backends.cache"
    client = Client()
    response = client.post(
        reverse("admin:login"), {"username": make_staff("teller").username, "password": STAFF_PASSWORD}
    )
    assert response.status_code == 302
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert cache.get(f"django.contrib.sessions.cache{key}") is not None


def test_only_a_supervisor_reverses_a_transfer(make_staff, make_account, actor):
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    transfer = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="40.00")
    url = reverse("admin:transfers_transfer_reverse", args=(transfer.pk,))
    teller = logged_in(make_staff("teller"))
    before = world_snapshot(alice, bob)
    assert (
        b'id="reverse-transfer"'
        not in teller.get(reverse("admin:transfers_transfer_change", args=(transfer.pk,))).content
    )
    assert teller.post(url, {"reference": "mistake"}).status_code == 403
    assert world_snapshot(alice, bob) == before

    supervisor = logged_in(make_staff("supervisor"))
    page = supervisor.get(reverse("admin:transfers_transfer_change", args=(transfer.pk,)))
    assert b'id="reverse-transfer"' in page.content
    done = post_reviewed(supervisor, url, {"reference": "mistake"}, follow=True)
    assert any(level == "success" for level, _ in messages_of(done))
    assert balances(alice, bob) == [Decimal("100.00"), Decimal("0.00")]
    assert Transfer.objects.get(reversal_of=transfer).status == Transfer.Status.COMPLETED


def test_a_superuser_outside_the_roles_reads_but_moves_no_money_and_changes_no_account(make_staff, make_account, actor):
    from django.contrib.auth.models import User

    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    transfer = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="40.00")
    client = logged_in(User.objects.create_superuser("root", password="root-password-123"))
    page = client.get(reverse("admin:accounts_account_change", args=(alice.number,)))
    assert page.status_code == 200  # reading is administration too
    assert not any(page.context[flag] for flag in ("can_cash", "can_transfer", "can_freeze", "can_close"))
    transfer_page = client.get(reverse("admin:transfers_transfer_change", args=(transfer.pk,)))
    assert b'id="reverse-transfer"' not in transfer_page.content
    before = world_snapshot(alice, bob)
    for url, data in (
        (
            reverse("admin:transfers_transfer_add"),
            {"source_account": alice.number, "destination_account": bob.number, "amount": "10.00"},
        ),
        (reverse("admin:accounts_account_deposit", args=(bob.number,)), {"amount": "10.00"}),
        (reverse("admin:accounts_account_withdraw", args=(alice.number,)), {"amount": "10.00"}),
        (reverse("admin:accounts_account_state", args=(bob.number, "freeze")), {"reason": "x"}),
        (reverse("admin:accounts_account_state", args=(bob.number, "close")), {"reason": "x"}),
        (reverse("admin:transfers_transfer_reverse", args=(transfer.pk,)), {"reference": "x"}),
        (reverse("admin:accounts_account_add"), {"ledger": "db1", "holder": "Root's friend", "currency": "CNY"}),
        (reverse("admin:transfers_transfer_stuck"), {"transfer": [str(transfer.pk)]}),
    ):
        response = client.post(url, data)
        assert response.status_code == 403, url
        assert b"administration (users, groups) only" in response.content, url
    assert world_snapshot(alice, bob) == before


def test_the_open_account_form_sent_twice_opens_one_account_and_deposits_once(make_staff):
    """The form carries the key it was shown with: a double click, or the page sent again, opens
    one account and books its opening deposit once; the same form edited and sent again is
    another request (the key is the form's nonce and its content)."""
    import re

    from accounts.models import Account
    from accounts.selectors import ledger_for_new_account

    client = logged_in(make_staff("teller"))
    page = client.get(reverse("admin:accounts_account_add")).content.decode()
    [key] = re.findall(r'name="idempotency_key" value="([0-9a-f]{32})"', page)
    fields = {"ledger": "db2", "holder": "Twice Clicked", "currency": "CNY", "opening_deposit": "25.00"}
    add = reverse("admin:accounts_account_add")
    first = post_reviewed(client, add, {**fields, "idempotency_key": key})
    again = post_reviewed(client, add, {**fields, "idempotency_key": key}, follow=True)
    # The ledger is the system's choice, whatever the form says.
    [account] = Account.objects.using(ledger_for_new_account(holder="Twice Clicked")).filter(holder="Twice Clicked")
    assert first.status_code == 302 and first["Location"] == again.redirect_chain[-1][0]
    assert (
        "success",
        f"Account {account.number} opened for Twice Clicked — this form had been sent already; nothing was done twice.",
    ) in messages_of(again)
    assert any("booked (completed) — this form had been sent already" in text for _, text in messages_of(again))
    assert balances(account) == [Decimal("25.00")]
    assert Transfer.objects.filter(destination_account=account.number).count() == 1
    before = world_snapshot(account)
    edited = post_reviewed(client, add, {**fields, "holder": "Someone Else", "idempotency_key": key})
    assert edited.status_code == 302
    [other] = Account.objects.using(ledger_for_new_account(holder="Someone Else")).filter(holder="Someone Else")
    assert world_snapshot(account)["accounts"] == before["accounts"] and balances(other) == [Decimal("25.00")]


def test_check_the_books_from_the_back_office(make_staff, make_account):
    make_account("db1", "10.00")
    url = reverse("admin:transfers_reconciliationrun_check")
    assert logged_in(make_staff("teller")).post(url).status_code == 403
    assert not ReconciliationRun.objects.exists()

    page = logged_in(make_staff("auditor")).post(url)

    assert page.status_code == 200 and "Books balance" in page.content.decode() and "Intact" in page.content.decode()
    run = ReconciliationRun.objects.get()
    assert run.ok and run.triggered_by == "admin:auditor"
    assert AuditEvent.objects.filter(action="books.checked", actor_name="auditor").count() == 1


def test_a_form_refused_for_a_missing_permission_is_on_record(make_staff, make_account):
    """A 403 in the back office is an audit event: who, which page, which permissions were missing."""
    from audit.models import AuditEvent

    auditor = make_staff("auditor")
    alice = make_account("db1", "100.00")
    client = logged_in(auditor)
    before = world_snapshot(alice)

    response = client.post(
        reverse("admin:transfers_transfer_add"),
        {"source_account": alice.number, "destination_account": alice.number, "amount": "1.00"},
    )

    assert response.status_code == 403 and world_snapshot(alice) == before
    refusal = AuditEvent.objects.get(action="backoffice.refused")
    assert (refusal.actor_id, refusal.object_type, refusal.object_id) == (
        auditor.pk,
        "page",
        "admin:transfers_transfer_add",
    )
    assert refusal.changes["code"] == "permission_denied"
    assert refusal.changes["missing"] == ["transfers.add_transfer"]


def test_the_transfer_list_and_the_account_page_say_the_states_badges_name(make_staff, make_account, actor):
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    paid = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="5.00")
    with pytest.raises(ApplicationError):  # more than Bob has: recorded, not made
        transfer_create(actor=actor, source_account=bob.number, destination_account=alice.number, amount="99.00")
    refused = Transfer.objects.get(status=Transfer.Status.ABORTED)
    client = logged_in(make_staff("supervisor"))
    url = reverse("admin:transfers_transfer_changelist")

    listing = client.get(url)
    [state] = [spec for spec in listing.context["cl"].filter_specs if spec.title == "state"]
    shown = [choice["display"] for choice in state.choices(listing.context["cl"])]
    assert shown == ["All", "In progress", "Pending approval", "Completed", "Reversed", "Not made"]
    assert not {"Aborted", "Committed", "aborted"} & set(shown)
    not_made = client.get(url, {"state": "not_made"}).context["cl"].result_list
    completed = client.get(url, {"state": "completed"}).context["cl"].result_list
    assert [t.pk for t in not_made] == [refused.pk] and paid.pk in [t.pk for t in completed]
    # The account's page says the same words.
    page = client.get(reverse("admin:accounts_account_change", args=(bob.number,))).content.decode()
    assert 'bo-badge-bad">Not made<' in page and 'bo-badge-ok">Completed<' in page and "Aborted" not in page
