"""Reconciliation finds every way the books can be off, and the commands say so."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from accounts.models import Account
from conftest import run_manage
from transfers.models import ReconciliationRun, Transfer, TransferLeg
from transfers.reconciliation import reconcile
from transfers.services import leg_prepare, transfer_create
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
    assert "accounts" in result.stderr  # the progress bar
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


def test_money_in_flight_is_counted_and_a_stuck_transfer_is_reported(actor, make_account):
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
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
        deadline=timezone.now() + timedelta(seconds=30),
        channel="system",
    )
    leg_prepare(transfer, TransferLeg.Leg.DEBIT)
    leg_prepare(transfer, TransferLeg.Leg.CREDIT)
    Transfer.objects.filter(pk=transfer.pk).update(status=Transfer.Status.COMMITTED, committed_at=timezone.now())
    from transfers.services import leg_commit

    leg_commit(transfer, TransferLeg.Leg.DEBIT)  # debit posted, credit still prepared: 30.00 in flight
    report = reconcile()
    assert report.in_flight == Decimal("30.00") and report.grand_total == 0
    assert report.ok, report.discrepancies
    later = timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT * 3)
    assert any("past its deadline" in line for line in reconcile(now=later).discrepancies)
    # The beat task finishes it (grace passed) and the books are clean at rest.
    Transfer.objects.filter(pk=transfer.pk).update(committed_at=timezone.now() - timedelta(seconds=60))
    assert recover_transfers() == {"leg_committed": 1, "transfer_completed": 1}
    assert reconcile_ledgers() is True
    assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.COMPLETED


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
    leg_prepare(transfer, TransferLeg.Leg.DEBIT)
    result = run_manage("recover_transfers", "--grace", "0")
    assert result.returncode == 0, result.stderr
    assert "transfer_aborted=1" in result.stdout
    assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.ABORTED
    assert reconcile().ok
