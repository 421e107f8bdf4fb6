"""Reconciliation finds every way the books can be off, and the commands say so."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from accounts.models import Account
from conftest import run_manage
from transfers import ledger_sql
from transfers.models import ReconciliationRun, Transfer, TransferLeg
from transfers.reconciliation import reconcile
from transfers.services import leg_commit, leg_decide, leg_prepare, transfer_create
from transfers.tasks import reconcile_ledgers, recover_transfers

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.books_may_not_balance]


def test_clean_books_reconcile_and_the_command_says_ok(actor, make_account):
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="10.00")
    report = reconcile()
    assert report.ok and report.grand_total == 0
    assert [s.ledger for s in report.ledgers] == list(settings.LEDGERS)
    result = run_manage("reconcile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: the books balance." in result.stdout
    assert "accounts" in result.stderr  # the progress bars: each ledger's accounts, then the trail's events
    assert " audit [##############################] 2/2 account events" in result.stderr
    assert ReconciliationRun.objects.latest().ok


def test_a_balance_changed_behind_the_engines_back_is_found(make_account):
    alice = make_account("db1", "100.00")
    Account.objects.using("db1").filter(pk=alice.pk).update(posted=Decimal("1000.00"))
    report = reconcile()
    assert not report.ok
    assert any(
        f"account {alice.number}: posted 1000.00 != sum of entries 100.00" in line for line in report.discrepancies
    )
    assert any("do not balance" in line for line in report.discrepancies)
    result = run_manage("reconcile", "--no-progress")
    assert result.returncode == 1
    assert "discrepancies" in result.stdout and alice.number in result.stdout
    assert not ReconciliationRun.objects.latest().ok
    Account.objects.using("db1").filter(pk=alice.pk).update(posted=Decimal("100.00"))
    assert reconcile().ok


def test_pending_counters_must_match_prepared_legs(make_account):
    alice = make_account("db2", "100.00")
    Account.objects.using("db2").filter(pk=alice.pk).update(pending_debits=Decimal("5.00"))
    report = reconcile()
    assert any("pending 5.00/0.00 != prepared legs 0.00/0.00" in line for line in report.discrepancies)
    Account.objects.using("db2").filter(pk=alice.pk).update(pending_debits=Decimal("0.00"))


def test_a_status_changed_behind_the_services_back_is_found(actor, make_account):
    """The audit trail explains every customer account's state: a status written in the database
    by hand (an unfreeze with no event) is a discrepancy, and so is an account with no
    ``account.opened`` event; a change younger than the grace is left to the next run."""
    from accounts.services import account_freeze

    alice = make_account("db1", "1.00")
    account_freeze(actor=actor, number=alice.number, reason="fraud check")
    assert reconcile(audit_grace=timedelta(0)).ok
    Account.objects.using("db1").filter(pk=alice.pk).update(status=Account.Status.ACTIVE)
    report = reconcile(audit_grace=timedelta(0))
    assert [line for line in report.discrepancies if alice.number in line] == [
        f"db1 account {alice.number}: active, but its last state event in the audit trail "
        f"(account.frozen, {_last_event_at(alice)}) left it frozen"
    ]
    assert reconcile().ok  # within the default grace of the freeze: not judged yet
    Account.objects.using("db1").filter(pk=alice.pk).update(status=Account.Status.FROZEN)
    # An account that never had its event (inserted behind the service's back).
    carol = Account.objects.using("db2").create(holder="Nobody Opened Me", currency="CNY")
    carol.number = f"{carol.pk}"
    Account.objects.using("db2").filter(pk=carol.pk).update(number=carol.number)
    report = reconcile(audit_grace=timedelta(0))
    assert report.discrepancies == [f"db2 account {carol.number}: no account.opened event in the audit trail"]
    assert reconcile().ok  # opened just now: within the grace
    Account.objects.using("db2").filter(pk=carol.pk).update(status=Account.Status.CLOSED)  # out of the books' way
    assert reconcile(audit_grace=timedelta(0)).discrepancies == [
        f"db2 account {carol.number}: no account.opened event in the audit trail"
    ]
    Account.objects.using("db2").filter(pk=carol.pk).update(kind=Account.Kind.INTERNAL)  # internal: not judged
    assert reconcile(audit_grace=timedelta(0)).ok


def _last_event_at(account) -> str:  # type: ignore[no-untyped-def]
    from audit.models import AuditEvent

    event = AuditEvent.objects.filter(object_type="account", object_id=account.number).latest("id")
    return f"{event.created_at:%Y-%m-%d %H:%M:%S}"


def _cross_transfer(alice, bob, **fields) -> Transfer:  # type: ignore[no-untyped-def]
    return Transfer.objects.create(
        source_account=alice.number,
        source_ledger=alice.ledger,
        destination_account=bob.number,
        destination_ledger=bob.ledger,
        amount=Decimal("30.00"),
        currency="CNY",
        client_id="t",
        request_hash="x",
        business_date=timezone.localdate(),
        deadline=timezone.now() + timedelta(seconds=30),
        channel="system",
        **fields,
    )


def test_money_in_flight_is_counted_and_a_stuck_transfer_is_reported(make_account):
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    transfer = _cross_transfer(alice, bob)
    leg_prepare(transfer)
    leg_decide(transfer)  # decided: credit posted, debit still prepared — 30.00 posted on one side only
    report = reconcile()
    assert report.in_flight == Decimal("-30.00") and report.grand_total == 0
    assert report.ok, report.discrepancies
    later = timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT * 3)
    assert any("past its deadline" in line for line in reconcile(now=later).discrepancies)
    # The beat task finishes it once the grace period has passed, and the books are clean at rest.
    Transfer.objects.filter(pk=transfer.pk).update(created_at=timezone.now() - timedelta(seconds=60))
    assert recover_transfers() == {"leg_committed": 1, "transfer_completed": 1}
    assert reconcile_ledgers() is True
    assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.COMPLETED


def _prepare_credit_as_the_earlier_protocol_did(transfer: Transfer, bob) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()
    ledger_sql.pending_add("db2", account_pk=bob.pk, field="pending_credits", amount=transfer.amount, now=now)
    ledger_sql.legs_insert(
        "db2",
        transfer_id=transfer.id,
        legs=[(TransferLeg.Leg.CREDIT, bob.pk)],
        amount=transfer.amount,
        state=TransferLeg.State.PREPARED,
        kind=transfer.kind,
        business_date=transfer.business_date,
        now=now,
    )


def test_a_transfer_left_by_the_earlier_protocol_is_counted_and_finished(make_account):
    """Before the decision moved into the credit leg, a COMMITTED transfer could have its debit
    posted and its credit still prepared (a rolling update meets such rows): +30.00 in flight,
    and recovery commits the credit."""
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    transfer = _cross_transfer(alice, bob, status=Transfer.Status.COMMITTED, committed_at=timezone.now())
    leg_prepare(transfer)
    _prepare_credit_as_the_earlier_protocol_did(transfer, bob)
    leg_commit(transfer, TransferLeg.Leg.DEBIT)
    report = reconcile()
    assert report.in_flight == Decimal("30.00") and report.grand_total == 0
    assert report.ok, report.discrepancies
    Transfer.objects.filter(pk=transfer.pk).update(committed_at=timezone.now() - timedelta(seconds=60))
    assert recover_transfers() == {"leg_committed": 1, "transfer_completed": 1}
    assert reconcile_ledgers() is True
    assert [Account.objects.using(a.ledger).get(pk=a.pk).posted for a in (alice, bob)] == [
        Decimal("70.00"),
        Decimal("30.00"),
    ]


def test_an_undecided_transfer_of_the_earlier_protocol_is_aborted_in_the_control_plane_first(make_account):
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    transfer = _cross_transfer(alice, bob)
    leg_prepare(transfer)
    _prepare_credit_as_the_earlier_protocol_did(transfer, bob)
    Transfer.objects.filter(pk=transfer.pk).update(deadline=timezone.now() - timedelta(seconds=1))

    assert recover_transfers() == {"transfer_aborted": 1}
    assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.ABORTED
    states = {leg.leg: leg.state for ledger in ("db1", "db2") for leg in TransferLeg.objects.using(ledger).all()}
    assert states == {"debit": "voided", "credit": "voided"}
    assert reconcile().ok


def test_recover_transfers_command_reports_what_it_did(make_account):
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    result = run_manage("recover_transfers")
    assert result.returncode == 0 and "nothing to do" in result.stdout
    transfer = Transfer.objects.create(
        source_account=alice.number,
        source_ledger="db1",
        destination_account=bob.number,
        destination_ledger="db2",
        amount=Decimal("30.00"),
        currency="CNY",
        client_id="t",
        request_hash="x",
        business_date=timezone.localdate(),
        deadline=timezone.now() - timedelta(seconds=1),
        channel="system",
    )
    leg_prepare(transfer)
    result = run_manage("recover_transfers", "--grace", "0")
    assert result.returncode == 0, result.stderr
    assert "transfer_aborted=1" in result.stdout
    assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.ABORTED
    assert reconcile().ok


@pytest.mark.parametrize(
    "arguments", [("--interval", "nan"), ("--interval", "0"), ("--grace", "-1"), ("--grace", "inf"), ("--grace", "x")]
)
def test_recover_transfers_refuses_seconds_that_are_no_duration(arguments):
    """A usage error naming the option (exit 2), not a traceback; nothing is recovered."""
    result = run_manage("recover_transfers", *arguments)
    assert result.returncode == 2 and arguments[0] in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_ledger_server_down_is_reported_unreachable_and_the_run_recorded(make_account):
    from bankcore.testing.plugin import ledger_servers

    make_account("db2", "10.00")
    server = ledger_servers()[1]  # db2's; the control plane lives with db1
    server.kill()
    try:
        result = run_manage("reconcile", "--no-progress")
    finally:
        server.start()
    assert result.returncode == 2, result.stdout + result.stderr
    assert "UNREACHABLE: ledger db2 did not answer" in result.stderr
    assert "Traceback" not in result.stderr
    assert "in flight: not summed" in result.stdout
    run = ReconciliationRun.objects.latest()
    assert not run.ok and list(run.report["unreachable"]) == ["db2"]
    assert [ledger["ledger"] for ledger in run.report["ledgers"]] == [x for x in settings.LEDGERS if x != "db2"]
    # This process's connection to the restarted server is dead: reconciliation reconnects itself.
    report = reconcile()
    assert report.ok, report.discrepancies
