"""Reconciliation finds every way the books can be off, and the commands say so."""

import importlib
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone

from accounts.models import Account
from bankcore.testing.processes import run_manage
from transfers.engine.legs import leg_decide, leg_prepare, leg_prepare_statements, leg_step_checked
from transfers.models import ReconciliationRun, Transfer, TransferLeg
from transfers.reconciliation import reconcile
from transfers.services import transfer_create
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


def _entry_forge(ledger: str, account, amount: str, transfer_id: uuid.UUID) -> None:
    """What someone with the database's password can do: an entry inserted and its account's
    ``posted`` moved to match, in raw SQL."""
    with connections[ledger].cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounts_entry (account_id, amount, balance_after, kind, transfer_id, description, "
            "created_at) VALUES (%s, %s, 0, 'deposit', %s, '', %s)",
            [account.pk, amount, transfer_id.hex, connections[ledger].ops.adapt_datetimefield_value(timezone.now())],
        )
        cursor.execute("UPDATE accounts_account SET posted = posted + %s WHERE id = %s", [amount, account.pk])


def test_a_balanced_pair_of_forged_entries_is_reported_and_nothing_else(make_account):
    """+40,000 to a customer, −40,000 to the cash account, ``posted`` updated to match: every
    balance equals its entries and the books sum to zero, but no transfer explains the entries."""
    from accounts.services import cash_account_ensure

    alice = make_account("db1", "100.00")
    cash = cash_account_ensure(ledger="db1", currency="CNY")
    forged = uuid.uuid4()
    _entry_forge("db1", alice, "40000.00", forged)
    _entry_forge("db1", cash, "-40000.00", forged)

    report = reconcile(audit_grace=timedelta(0))
    assert report.grand_total == 0
    assert sorted(report.discrepancies) == sorted(
        f"db1: entry of {amount} on account {account.number} names transfer {forged}, which the control plane "
        "does not know"
        for account, amount in ((alice, "40000.00"), (cash, "-40000.00"))
    )
    result = run_manage("reconcile", "--no-progress")
    assert result.returncode == 1 and "2 discrepancies:" in result.stdout
    assert f"on account {alice.number} names transfer {forged}" in result.stdout


def test_an_explained_entry_with_another_amount_is_reported(actor, make_account):
    """A transfer's two entries rewritten with a larger amount (the append-only trigger dropped by
    someone allowed to), and the balances moved to match: the books still sum to zero."""
    alice, bob = make_account("db1", "100.00"), make_account("db1", "0.00")
    transfer = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="10.00")
    no_update = importlib.import_module("accounts.migrations.0004_entry_append_only_triggers")
    with connections["db1"].cursor() as cursor:
        cursor.execute(f"DROP TRIGGER {no_update.NO_UPDATE}")
        try:
            for account, amount, delta in ((alice, "-15.00", "-5.00"), (bob, "15.00", "5.00")):
                cursor.execute(
                    "UPDATE accounts_entry SET amount = %s WHERE transfer_id = %s AND account_id = %s",
                    [amount, transfer.id.hex, account.pk],
                )
                cursor.execute(
                    "UPDATE accounts_account SET posted = posted + %s WHERE id = %s",
                    [delta, account.pk],
                )
        finally:
            cursor.execute(no_update._statements(connections["db1"].vendor)[0])

    report = reconcile(audit_grace=timedelta(0))
    assert report.grand_total == 0
    assert sorted(report.discrepancies) == sorted(
        [
            f"db1: entry of -15.00 on account {alice.number} for transfer {transfer.id}: the transfer's debit "
            "there is -10.00",
            f"db1: entry of 15.00 on account {bob.number} for transfer {transfer.id}: the transfer's credit "
            "there is 10.00",
        ]
    )


def _last_event_at(account) -> str:
    from audit.models import AuditEvent

    event = AuditEvent.objects.filter(object_type="account", object_id=account.number).latest("id")
    return f"{event.created_at:%Y-%m-%d %H:%M:%S}"


def _cross_transfer(alice, bob, **fields) -> Transfer:
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


def test_a_completed_transfer_without_its_entries_is_reported(make_account):
    """The control plane says a transfer completed, the ledgers hold none of its entries."""
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    transfer = _cross_transfer(alice, bob, status=Transfer.Status.COMPLETED, finished_at=timezone.now())

    report = reconcile(audit_grace=timedelta(0))
    assert report.discrepancies == [
        f"db1: transfer {transfer.id} is completed but its debit of -30.00 on account {alice.number} has no entry",
        f"db2: transfer {transfer.id} is completed but its credit of 30.00 on account {bob.number} has no entry",
    ]
    assert reconcile().ok  # completed within the grace: its entries may postdate the snapshot


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


def test_a_transfer_decided_by_its_debit_with_its_credit_held_is_counted_and_finished(make_account):
    """Towards the control plane's server the credit is the home leg, held, and the debit decides:
    a COMMITTED transfer can have its debit posted and its credit still prepared, +30.00 in
    flight, and recovery commits the credit."""
    alice, bob = make_account("db2", "100.00"), make_account("db1", "0.00")
    transfer = _cross_transfer(alice, bob, status=Transfer.Status.COMMITTED, committed_at=timezone.now())
    credit = TransferLeg.Leg.CREDIT
    leg_step_checked(transfer, credit, lambda: leg_prepare_statements(transfer, credit), doing="preparing")
    leg_decide(transfer, TransferLeg.Leg.DEBIT)
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
