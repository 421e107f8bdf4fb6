"""Four eyes: above APPROVAL_THRESHOLD a teller's movement waits; a supervisor other than its maker
approves (it executes once) or rejects it; the maker never decides their own, whatever the door."""

import threading
from decimal import Decimal

import pytest
from django.db import connections

from audit.models import AuditEvent
from bankcore.actors import Actor, Channel
from bankcore.errors import ApplicationError
from bankcore.testing.backoffice import post_reviewed
from bankcore.testing.books import balances, world_snapshot
from transfers.approval_rules import approval_required
from transfers.approvals import (
    approval_approve,
    approval_execute,
    approval_reject,
    approval_request,
    money_movement_execute,
    money_movement_submit,
)
from transfers.errors import (
    ApprovalNotAllowed,
    ApprovalNotPending,
    ApprovalReasonRequired,
    ApprovalRequired,
    ApprovalSelfApproval,
    IdempotencyKeyReused,
    InsufficientFunds,
    RoleRequired,
)
from transfers.models import Approval, Transfer

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def as_actor(user, channel=Channel.ADMIN):
    return Actor.for_user(user, channel=channel, ip="10.1.2.3")


def ask(maker, source, destination, amount="20000.00"):
    """A transfer request PENDING approval, made through the service directly."""
    return approval_request(
        actor=as_actor(maker),
        kind=Approval.Kind.TRANSFER,
        amount=amount,
        source_account=source.number,
        destination_account=destination.number,
    )


@pytest.fixture
def people(make_staff):
    return {
        "teller": make_staff("teller"),
        "supervisor": make_staff("supervisor"),
        "supervisor2": make_staff("supervisor", "supervisor2"),
        "auditor": make_staff("auditor"),
    }


def test_a_teller_transfer_above_the_threshold_waits_and_moves_nothing(people, make_account, settings):
    settings.APPROVAL_THRESHOLD = Decimal("10000.00")
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    teller = people["teller"]
    before = world_snapshot(alice, bob)

    outcome = money_movement_submit(
        actor=as_actor(teller),
        user=teller,
        kind=Approval.Kind.TRANSFER,
        amount="10000.01",
        source_account=alice.number,
        destination_account=bob.number,
        reference="car",
    )

    assert isinstance(outcome, Approval) and outcome.status == Approval.Status.PENDING
    assert (outcome.maker_id, outcome.amount, outcome.currency) == (teller.pk, Decimal("10000.01"), "CNY")
    after = world_snapshot(alice, bob)
    # Nothing posted; the amount is held on the source (pending debits) by one pending transfer.
    assert after["accounts"] == [
        (Decimal("30000.00"), Decimal("10000.01"), Decimal("0.00"), "active"),
        before["accounts"][1],
    ]
    assert after["entries"] == before["entries"] and after["transfers"] == before["transfers"] + 1
    assert outcome.transfer_id is not None
    hold = Transfer.objects.get(pk=outcome.transfer_id)
    assert (hold.status, hold.created_by_id, hold.amount) == (Transfer.Status.PENDING, teller.pk, outcome.amount)
    event = AuditEvent.objects.get(action="approval.requested", object_id=str(outcome.pk))
    assert (event.actor_id, event.channel, event.ip) == (teller.pk, Channel.ADMIN, "10.1.2.3")


def test_at_the_threshold_it_executes_at_once_and_a_supervisor_above_solo_limit_waits(people, make_account, settings):
    alice, bob = make_account("db1", "45000.00"), make_account("db2", "0.00")
    at_threshold = money_movement_submit(
        actor=as_actor(people["teller"]),
        user=people["teller"],
        kind=Approval.Kind.TRANSFER,
        amount="10000.00",
        source_account=alice.number,
        destination_account=bob.number,
    )
    by_supervisor = money_movement_submit(
        actor=as_actor(people["supervisor"]),
        user=people["supervisor"],
        kind=Approval.Kind.WITHDRAWAL,
        amount="15000.00",
        source_account=alice.number,
    )
    assert isinstance(at_threshold, Transfer) and at_threshold.status == Transfer.Status.COMPLETED
    # SOLO_LIMIT defaults to APPROVAL_THRESHOLD: above it a second supervisor looks.
    assert isinstance(by_supervisor, Approval) and by_supervisor.status == Approval.Status.PENDING
    assert "SOLO_LIMIT" in by_supervisor.why
    assert balances(alice, bob) == [Decimal("35000.00"), Decimal("10000.00")]  # 15,000.00 of it held

    settings.SOLO_LIMIT = Decimal("20000.00")  # a branch with one supervisor
    alone = money_movement_submit(
        actor=as_actor(people["supervisor2"]),
        user=people["supervisor2"],
        kind=Approval.Kind.WITHDRAWAL,
        amount="15000.00",
        source_account=alice.number,
    )
    assert isinstance(alone, Transfer) and alone.status == Transfer.Status.COMPLETED
    assert balances(alice, bob) == [Decimal("20000.00"), Decimal("10000.00")]


@pytest.mark.parametrize("kind", ["transfer", "deposit", "withdrawal"])
def test_another_supervisor_approves_and_it_executes_as_the_maker(people, make_account, kind):
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "100.00")
    teller, checker = people["teller"], people["supervisor"]
    approval = money_movement_submit(
        actor=as_actor(teller),
        user=teller,
        kind=kind,
        amount="12000.00",
        source_account=alice.number if kind != "deposit" else "",
        destination_account=bob.number if kind != "withdrawal" else "",
    )
    assert isinstance(approval, Approval)

    approved = approval_approve(actor=as_actor(checker), approval_id=approval.pk)

    assert approved.status == Approval.Status.EXECUTED and approved.checker_id == checker.pk
    assert approved.transfer_id is not None
    transfer = Transfer.objects.get(pk=approved.transfer_id)
    assert transfer.status == Transfer.Status.COMPLETED and transfer.created_by_id == teller.pk
    expected = {
        "transfer": [Decimal("18000.00"), Decimal("12100.00")],
        "deposit": [Decimal("30000.00"), Decimal("12100.00")],
        "withdrawal": [Decimal("18000.00"), Decimal("100.00")],
    }[kind]
    assert balances(alice, bob) == expected
    actions = list(
        AuditEvent.objects.filter(object_type="approval", object_id=str(approval.pk))
        .order_by("id")
        .values_list("action", "actor_id")
    )
    assert actions == [
        ("approval.requested", teller.pk),
        ("approval.approved", checker.pk),
        ("approval.executed", checker.pk),
    ]


def test_the_maker_can_never_decide_their_own_request(people, make_account):
    # A supervisor's own request (made through the service directly) still needs another one.
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    maker = people["supervisor"]
    approval = ask(maker, alice, bob)
    before = world_snapshot(alice, bob)

    for channel in (Channel.ADMIN, Channel.API):
        with pytest.raises(ApprovalSelfApproval) as refused:
            approval_approve(actor=as_actor(maker, channel), approval_id=approval.pk)
        assert refused.value.code == "approval_self_approval"
        with pytest.raises(ApprovalSelfApproval):
            approval_reject(actor=as_actor(maker, channel), approval_id=approval.pk, reason="mine")

    assert world_snapshot(alice, bob) == before
    approval_approve(actor=as_actor(people["supervisor2"]), approval_id=approval.pk)
    assert balances(alice, bob) == [Decimal("10000.00"), Decimal("20000.00")]


@pytest.mark.parametrize("who", ["auditor", "teller2"])
def test_only_a_supervisor_may_decide(people, make_staff, make_account, who):
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    approval = ask(people["teller"], alice, bob)
    user = make_staff("teller", "teller2") if who == "teller2" else people[who]
    before = world_snapshot(alice, bob)
    with pytest.raises(ApprovalNotAllowed):
        approval_approve(actor=as_actor(user), approval_id=approval.pk)
    with pytest.raises(ApprovalNotAllowed):
        approval_reject(actor=as_actor(user), approval_id=approval.pk, reason="no")
    with pytest.raises(ApprovalNotAllowed):
        approval_approve(actor=Actor.system(Channel.COMMAND, "script"), approval_id=approval.pk)
    assert world_snapshot(alice, bob) == before


def test_reject_needs_a_reason_and_moves_nothing(people, make_account):
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    approval = ask(people["teller"], alice, bob)
    checker = as_actor(people["supervisor"])
    with pytest.raises(ApprovalReasonRequired):
        approval_reject(actor=checker, approval_id=approval.pk, reason="   ")
    before = world_snapshot(alice, bob)

    rejected = approval_reject(actor=checker, approval_id=approval.pk, reason="customer not present")

    assert rejected.status == Approval.Status.REJECTED and rejected.reason == "customer not present"
    after = world_snapshot(alice, bob)
    # The hold is released: nothing pending, nothing posted.
    assert after["accounts"] == [(Decimal("30000.00"), Decimal("0.00"), Decimal("0.00"), "active")] + [
        before["accounts"][1]
    ]
    assert after["entries"] == before["entries"] and after["transfers"] == before["transfers"]
    assert rejected.transfer_id is not None
    hold = Transfer.objects.get(pk=rejected.transfer_id)
    assert (hold.status, hold.failure_code) == (Transfer.Status.ABORTED, "approval_rejected")
    with pytest.raises(ApprovalNotPending):
        approval_approve(actor=as_actor(people["supervisor2"]), approval_id=approval.pk)
    assert balances(alice, bob) == [Decimal("30000.00"), Decimal("0.00")]


def test_an_approved_request_the_engine_refuses_is_failed_with_its_reason(people, make_account, actor, settings):
    from accounts.errors import AccountFrozen
    from accounts.services import account_freeze

    settings.SOLO_LIMIT = Decimal("50000.00")  # the supervisor's own withdrawal below goes alone
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    approval = ask(people["teller"], alice, bob)
    # The held money cannot leave while the request waits ...
    with pytest.raises(InsufficientFunds):
        money_movement_submit(
            actor=as_actor(people["supervisor"]),
            user=people["supervisor"],
            kind=Approval.Kind.WITHDRAWAL,
            amount="15000.00",
            source_account=alice.number,
        )
    # ... but the account credited may be frozen meanwhile.
    account_freeze(actor=actor, number=bob.number, reason="fraud check")
    with pytest.raises(AccountFrozen):
        approval_approve(actor=as_actor(people["supervisor2"]), approval_id=approval.pk)
    approval.refresh_from_db()
    assert approval.status == Approval.Status.FAILED and approval.failure_code == "account_frozen"
    assert world_snapshot(alice)["accounts"] == [(Decimal("30000.00"), Decimal("0.00"), Decimal("0.00"), "active")]
    assert balances(alice, bob) == [Decimal("30000.00"), Decimal("0.00")]


def test_two_supervisors_approving_at_once_execute_it_once(people, make_staff, make_account):
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    approval = ask(people["teller"], alice, bob)
    checkers = [people["supervisor"], people["supervisor2"], make_staff("supervisor", "supervisor3")]
    barrier = threading.Barrier(len(checkers))
    outcomes: list[object] = []

    def approve(user):
        try:
            barrier.wait(timeout=10)
            outcomes.append(approval_approve(actor=as_actor(user), approval_id=approval.pk).status)
        except ApplicationError as error:
            outcomes.append(error.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=approve, args=(user,)) for user in checkers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(map(str, outcomes)) == ["approval_not_pending", "approval_not_pending", "executed"]
    assert balances(alice, bob) == [Decimal("10000.00"), Decimal("20000.00")]
    assert Transfer.objects.filter(kind=Transfer.Kind.TRANSFER, amount=Decimal("20000.00")).count() == 1
    assert AuditEvent.objects.filter(action="approval.executed", object_id=str(approval.pk)).count() == 1


def test_a_request_submitted_twice_waits_once(people, make_account):
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    teller = people["teller"]

    def submit(amount="12000.00"):
        return money_movement_submit(
            actor=as_actor(teller),
            user=teller,
            kind=Approval.Kind.TRANSFER,
            amount=amount,
            source_account=alice.number,
            destination_account=bob.number,
            idempotency_key="form-key-1",
        )

    first, again = submit(), submit()
    assert isinstance(first, Approval) and again.pk == first.pk
    assert Approval.objects.count() == 1
    assert AuditEvent.objects.filter(action="approval.requested").count() == 1
    with pytest.raises(IdempotencyKeyReused):
        submit("12000.01")
    assert Approval.objects.count() == 1


@pytest.mark.parametrize("kind", ["transfer", "deposit", "withdrawal"])
def test_a_superuser_outside_the_roles_moves_no_money(people, make_account, kind):
    from django.contrib.auth.models import User

    root = User.objects.create_superuser("root", password="root-password-123")
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    other = ask(people["teller"], alice, bob)
    before = world_snapshot(alice, bob)
    for entry in (money_movement_submit, money_movement_execute):
        for amount in ("10.00", "20000.00"):  # below the threshold too: it is not about four eyes
            with pytest.raises(RoleRequired) as refused:
                entry(
                    actor=as_actor(root),
                    user=root,
                    kind=kind,
                    amount=amount,
                    source_account=alice.number if kind != "deposit" else "",
                    destination_account=bob.number if kind != "withdrawal" else "",
                )
            assert "administration" in refused.value.detail and refused.value.http_status == 403
    with pytest.raises(ApprovalNotAllowed):  # nobody's second pair of eyes either
        approval_approve(actor=as_actor(root), approval_id=other.pk)
    assert world_snapshot(alice, bob) == before


def test_a_superuser_in_a_role_acts_as_the_role(people, make_account):
    from django.contrib.auth.models import Group, User

    root = User.objects.create_superuser("root", password="root-password-123")
    root.groups.add(Group.objects.get(name="supervisor"))
    root = User.objects.get(pk=root.pk)  # no cached permissions
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    done = money_movement_submit(
        actor=as_actor(root),
        user=root,
        kind=Approval.Kind.TRANSFER,
        amount="9000.00",
        source_account=alice.number,
        destination_account=bob.number,
    )
    assert isinstance(done, Transfer) and done.status == Transfer.Status.COMPLETED
    waits = money_movement_submit(
        actor=as_actor(root),
        user=root,
        kind=Approval.Kind.TRANSFER,
        amount="1000.01",
        source_account=alice.number,
        destination_account=bob.number,
    )
    assert isinstance(waits, Approval) and "SOLO_LIMIT" in waits.why  # a supervisor's rule, not a superuser's
    assert balances(alice, bob) == [Decimal("21000.00"), Decimal("9000.00")]


def test_who_needs_four_eyes(people, make_staff, settings):
    from bankcore.testing.personas import api_user

    settings.APPROVAL_THRESHOLD = Decimal("100.00")
    settings.SOLO_LIMIT = Decimal("500.00")
    partner = api_user("partner")
    staff_by_permission = api_user("staff", permissions=("transfers.add_transfer",))  # not flagged is_staff
    above, at = Decimal("100.01"), Decimal("100.00")
    assert approval_required(user=people["teller"], amount=above)
    assert approval_required(user=staff_by_permission, amount=above)
    assert not approval_required(user=people["teller"], amount=at)
    assert not approval_required(user=people["supervisor"], amount=above)
    assert approval_required(user=people["supervisor"], amount=Decimal("500.01"))
    assert not approval_required(user=partner, amount=Decimal("500.01"))  # acts on its customers' authority


def test_a_door_without_a_queue_refuses_what_needs_four_eyes_and_stores_nothing(people, make_account):
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    teller = people["teller"]
    before = world_snapshot(alice, bob)

    def execute(user, amount):
        return money_movement_execute(
            actor=as_actor(user, Channel.API),
            user=user,
            kind=Approval.Kind.TRANSFER,
            amount=amount,
            source_account=alice.number,
            destination_account=bob.number,
            idempotency_key=f"k-{user.pk}-{amount}",
        )

    with pytest.raises(ApprovalRequired) as refused:
        execute(teller, "10000.01")
    assert refused.value.http_status == 403 and "back office" in refused.value.detail
    assert world_snapshot(alice, bob) == before  # no approval, no transfer, no audit event

    with pytest.raises(ApprovalRequired):
        execute(people["supervisor"], "10000.01")  # above SOLO_LIMIT
    assert world_snapshot(alice, bob) == before

    at_threshold = execute(teller, "10000.00")
    by_supervisor = execute(people["supervisor"], "10000.00")
    assert at_threshold.status == by_supervisor.status == Transfer.Status.COMPLETED
    assert balances(alice, bob) == [Decimal("10000.00"), Decimal("20000.00")]
    assert not Approval.objects.exists()


def test_an_approved_request_is_executed_only_by_a_supervisor_other_than_its_maker(people, make_account):
    # A ledger did not answer at approval time: the request stays APPROVED, to be executed again.
    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    approval = ask(people["teller"], alice, bob)
    Approval.objects.filter(pk=approval.pk).update(status=Approval.Status.APPROVED, checker=people["supervisor"])
    with pytest.raises(ApprovalSelfApproval):
        approval_execute(actor=as_actor(people["teller"]), approval_id=approval.pk)
    with pytest.raises(ApprovalNotAllowed):
        approval_execute(actor=as_actor(people["auditor"]), approval_id=approval.pk)
    assert balances(alice, bob) == [Decimal("30000.00"), Decimal("0.00")]
    executed = approval_execute(actor=as_actor(people["supervisor2"]), approval_id=approval.pk)
    assert executed.status == Approval.Status.EXECUTED
    assert balances(alice, bob) == [Decimal("10000.00"), Decimal("20000.00")]


def test_a_teller_made_supervisor_for_a_moment_approving_their_own_request_is_on_record(people, make_account):
    """The maker, given the supervisor role, forces a POST approving their own request: refused,
    nothing moved, and the refusal is an audit event with who tried and the refusal's code, not
    only a line in the audit file."""
    from django.contrib.auth.models import Group
    from django.test import Client
    from django.urls import reverse

    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    teller = people["teller"]
    approval = ask(teller, alice, bob)
    teller.groups.add(Group.objects.get(name="supervisor"))
    client = Client()
    client.force_login(teller)
    before = world_snapshot(alice, bob)

    post_reviewed(client, reverse("admin:transfers_approval_decide", args=(approval.pk,)), {"decision": "approve"})

    assert world_snapshot(alice, bob) == before
    refusal = AuditEvent.objects.get(action="approval.approve.refused")
    assert (refusal.actor_id, refusal.actor_name, refusal.channel) == (teller.pk, "teller", Channel.ADMIN)
    assert (refusal.object_type, refusal.object_id) == ("approval", str(approval.pk))
    assert refusal.changes == {"code": "approval_self_approval"}
    assert refusal.ip is not None and refusal.request_id


# --- the amount held while a request waits ---------------------------------------------------


def test_a_request_the_engine_would_refuse_is_refused_at_submit_and_holds_nothing(people, make_account, actor):
    from accounts.errors import AccountFrozen
    from accounts.services import account_freeze

    alice, bob, frozen = make_account("db1", "10000.00"), make_account("db2"), make_account("db2")
    account_freeze(actor=actor, number=frozen.number, reason="fraud check")
    before = world_snapshot(alice, bob, frozen)

    with pytest.raises(InsufficientFunds):
        ask(people["teller"], alice, bob, amount="15000.00")
    with pytest.raises(AccountFrozen) as refused:
        ask(people["teller"], alice, frozen, amount="12000.00")

    assert "frozen" in refused.value.detail
    after = world_snapshot(alice, bob, frozen)
    assert after["accounts"] == before["accounts"] and after["approvals"] == before["approvals"] == []
    # The refused hold is recorded, as any refused transfer: one aborted transfer, nothing held.
    assert Transfer.objects.get(status=Transfer.Status.ABORTED).failure_code == "insufficient_funds"


@pytest.mark.parametrize("ledgers", [("db1", "db2"), ("db1", "db1")])
def test_the_maker_withdraws_a_request_and_the_hold_is_released(people, make_account, ledgers):
    from transfers.approvals import approval_withdraw
    from transfers.errors import ApprovalNotMaker
    from transfers.reconciliation import reconcile

    alice, bob = make_account(ledgers[0], "30000.00"), make_account(ledgers[1], "0.00")
    approval = ask(people["teller"], alice, bob)
    assert world_snapshot(alice)["accounts"][0][1] == Decimal("20000.00")
    with pytest.raises(ApprovalNotMaker):
        approval_withdraw(actor=as_actor(people["supervisor"]), approval_id=approval.pk)

    withdrawn = approval_withdraw(actor=as_actor(people["teller"]), approval_id=approval.pk)

    assert withdrawn.status == Approval.Status.WITHDRAWN
    assert world_snapshot(alice)["accounts"] == [(Decimal("30000.00"), Decimal("0.00"), Decimal("0.00"), "active")]
    with pytest.raises(ApprovalNotPending):
        approval_approve(actor=as_actor(people["supervisor"]), approval_id=approval.pk)
    with pytest.raises(ApprovalNotPending):
        approval_withdraw(actor=as_actor(people["teller"]), approval_id=approval.pk)
    assert balances(alice, bob) == [Decimal("30000.00"), Decimal("0.00")]
    assert AuditEvent.objects.filter(action="approval.withdrawn", actor_id=people["teller"].pk).count() == 1
    assert reconcile().ok


@pytest.mark.parametrize("ledgers", [("db1", "db2"), ("db2", "db2")])
def test_a_request_not_decided_in_time_expires_and_recovery_releases_its_hold(people, make_account, settings, ledgers):
    from datetime import timedelta

    from django.utils import timezone

    from transfers.reconciliation import reconcile
    from transfers.recovery import transfers_recover

    alice, bob = make_account(ledgers[0], "40000.00"), make_account(ledgers[1], "0.00")
    approval, other = ask(people["teller"], alice, bob), ask(people["teller"], alice, bob, amount="10000.50")
    assert world_snapshot(alice)["accounts"][0][1] == Decimal("30000.50")
    assert reconcile().ok  # a hold is a prepared leg within its deadline

    later = timezone.now() + timedelta(seconds=settings.APPROVAL_HOLD_SECONDS + 1)
    report = transfers_recover(now=later)

    assert report.actions["transfer_aborted"] == 2 and report.actions["approval_expired"] == 2, report.actions
    for request in (approval, other):
        request.refresh_from_db()
        assert request.status == Approval.Status.EXPIRED
        assert Transfer.objects.get(pk=request.transfer_id).status == Transfer.Status.ABORTED
    assert world_snapshot(alice)["accounts"] == [(Decimal("40000.00"), Decimal("0.00"), Decimal("0.00"), "active")]
    with pytest.raises(ApprovalNotPending):
        approval_approve(actor=as_actor(people["supervisor"]), approval_id=approval.pk)
    assert balances(alice, bob) == [Decimal("40000.00"), Decimal("0.00")]
    assert reconcile().ok


def test_approving_past_the_hold_s_deadline_expires_the_request(people, make_account):
    from datetime import timedelta

    from django.utils import timezone

    from transfers.errors import ApprovalExpired

    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    approval = ask(people["teller"], alice, bob)
    # The hold's deadline passed before recovery's next pass.
    Transfer.objects.filter(pk=approval.transfer_id).update(deadline=timezone.now() - timedelta(seconds=1))

    with pytest.raises(ApprovalExpired):
        approval_approve(actor=as_actor(people["supervisor"]), approval_id=approval.pk)

    approval.refresh_from_db()
    assert approval.status == Approval.Status.EXPIRED
    assert world_snapshot(alice)["accounts"] == [(Decimal("30000.00"), Decimal("0.00"), Decimal("0.00"), "active")]
    assert balances(alice, bob) == [Decimal("30000.00"), Decimal("0.00")]


def test_a_hold_no_request_refers_to_is_released_by_recovery(people, make_account, settings):
    # The process stopped between holding the amount and storing the request.
    from datetime import timedelta

    from django.utils import timezone

    from transfers.reconciliation import reconcile
    from transfers.recovery import transfers_recover
    from transfers.services import transfer_hold

    alice, bob = make_account("db1", "30000.00"), make_account("db2", "0.00")
    hold = transfer_hold(
        actor=as_actor(people["teller"]),
        kind=Transfer.Kind.TRANSFER,
        source_account=alice.number,
        destination_account=bob.number,
        amount="12000.00",
        until=timezone.now() + timedelta(seconds=settings.APPROVAL_HOLD_SECONDS),
    )
    waiting = ask(people["teller"], alice, bob, amount="10000.50")  # a hold its request refers to
    assert world_snapshot(alice)["accounts"][0][1] == Decimal("22000.50")

    soon = transfers_recover(now=timezone.now() + timedelta(seconds=1))
    assert "orphan_hold_released" not in soon.actions  # a request may still be on its way
    later = transfers_recover(now=timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT + 1))

    assert later.actions["orphan_hold_released"] == 1, later.actions
    hold.refresh_from_db()
    assert (hold.status, hold.failure_code) == (Transfer.Status.ABORTED, "approval_expired")
    waiting.refresh_from_db()
    assert waiting.status == Approval.Status.PENDING
    assert world_snapshot(alice)["accounts"][0][1] == Decimal("10000.50")
    assert balances(alice, bob) == [Decimal("30000.00"), Decimal("0.00")] and reconcile().ok
