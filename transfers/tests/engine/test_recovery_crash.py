"""Kill a transfer at every fault point (a child process that exits hard there), then let
recovery run: every transfer ends COMPLETED or ABORTED as the protocol says, and the books
balance."""

import subprocess
import sys
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone

from accounts.models import Account
from accounts.services import account_freeze
from bankcore.faults import FAULT_EXIT_CODE, FAULT_POINTS
from bankcore.testing.books import NOTHING_HELD, balances, held
from bankcore.testing.processes import subprocess_env
from transfers.engine.legs import leg_prepare
from transfers.models import Transfer, TransferLeg
from transfers.reconciliation import reconcile
from transfers.recovery import transfers_recover

pytestmark = [pytest.mark.django_db(transaction=True, databases="__all__"), pytest.mark.slow]


def run_until_fault(
    fault: str, source: str, destination: str, amount: str, *, shared: bool = False
) -> subprocess.CompletedProcess[str]:
    """``shared``: with the commits shared with the control plane's server (three steps, the
    default); without, every step commits on its own (five steps, as with ledgers elsewhere)."""
    return subprocess.run(
        [sys.executable, "-m", "transfers.tests.engine.crash_worker", source, destination, amount],
        env=subprocess_env(BANKCORE_FAULT_AT=fault, BANKCORE_SHARED_COMMITS=str(shared).lower()),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=settings.BASE_DIR,
    )


def recover_until_fault(fault: str) -> None:
    """Recovery, past every deadline, in a child process that exits hard at ``fault``."""
    later = (timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT + 5)).isoformat()
    code = (
        "import django; django.setup();"
        "from django.utils.dateparse import parse_datetime;"
        "from transfers.recovery import transfers_recover;"
        f"transfers_recover(now=parse_datetime('{later}'), grace_seconds=0)"
    )
    child = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(BANKCORE_FAULT_AT=fault),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=settings.BASE_DIR,
    )
    assert child.returncode == FAULT_EXIT_CODE, child.stderr


def recover_after_deadline() -> None:
    later = timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT + 5)
    transfers_recover(now=later, grace_seconds=0)
    second = transfers_recover(now=later, grace_seconds=0)
    assert second.total == 0 and not second.errors, "recovery must be idempotent"


CROSS = [
    ("after_accept", Transfer.Status.ABORTED),
    ("after_prepare_debit", Transfer.Status.ABORTED),
    ("after_decide_credit", Transfer.Status.COMPLETED),
    ("after_finish_debit", Transfer.Status.COMPLETED),
]
LOCAL = [
    ("after_accept", Transfer.Status.ABORTED),
    ("after_local_commit", Transfer.Status.COMPLETED),
]
# With the control plane's server (db1): (source ledger, destination ledger, fault, outcome). From
# db1 the debit is the home leg and the credit decides; towards db1 the credit is home and the
# debit decides.
HOME = [
    ("db1", "db2", "after_accept_prepare", Transfer.Status.ABORTED),
    ("db1", "db2", "after_decide_credit", Transfer.Status.COMPLETED),
    ("db2", "db1", "after_accept_prepare", Transfer.Status.ABORTED),
    ("db2", "db1", "after_decide_debit", Transfer.Status.COMPLETED),
]


def test_every_fault_point_is_exercised():
    exercised = {f for f, _ in CROSS + LOCAL} | {f for *_, f, _ in HOME}
    exercised |= {"after_decide_abort", "after_tombstone", "after_account_insert"}
    # A batch killed at each of its steps: transfers/tests/engine/test_batch.py.
    exercised |= {"after_batch_accept", "after_batch_prepare", "after_batch_decide", "after_batch_link"}
    exercised |= {"after_batch_finish"}
    assert exercised == set(FAULT_POINTS)


def _assert_settled(transfer: Transfer, alice, bob, outcome: str) -> None:
    transfer.refresh_from_db()
    assert transfer.status == outcome
    expected = (
        [Decimal("70.00"), Decimal("35.00")]
        if outcome == Transfer.Status.COMPLETED
        else [Decimal("100.00"), Decimal("5.00")]
    )
    assert balances(alice, bob) == expected
    assert held(alice, bob) == [NOTHING_HELD] * 2
    states = {
        leg.leg: leg.state
        for ledger in settings.LEDGERS
        for leg in TransferLeg.objects.using(ledger).filter(transfer_id=transfer.id)
    }
    if outcome == Transfer.Status.COMPLETED:
        assert states == {"debit": "committed", "credit": "committed"}
    else:
        assert set(states.values()) <= {"voided"}
        assert transfer.failure_code == "transfer_timed_out"
    assert reconcile().ok


@pytest.mark.parametrize(("source", "destination", "fault", "outcome"), HOME)
def test_crash_at_fault_point_with_the_control_planes_server_then_recovery(
    make_account, source, destination, fault, outcome
):
    alice, bob = make_account(source, "100.00"), make_account(destination, "5.00")
    result = run_until_fault(fault, alice.number, bob.number, "30.00", shared=True)
    assert result.returncode == FAULT_EXIT_CODE, result.stdout + result.stderr
    transfer = Transfer.objects.get(kind=Transfer.Kind.TRANSFER)
    assert not transfer.is_final
    home = "debit" if source == "db1" else "credit"
    assert TransferLeg.objects.using("db1").get(transfer_id=transfer.id, leg=home).state == "prepared"
    recover_after_deadline()
    _assert_settled(transfer, alice, bob, outcome)


def test_crash_in_recovery_between_its_debit_tombstone_and_the_abort(make_account):
    """Towards the control plane's ledger the credit leg is prepared at accept and the debit leg
    decides: recovery's tombstone goes on the debit leg's key, and a recovery killed right after
    it leaves a transfer the next pass aborts, releasing the held credit."""
    alice, bob = make_account("db2", "100.00"), make_account("db1", "5.00")
    assert run_until_fault("after_accept_prepare", alice.number, bob.number, "30.00", shared=True).returncode == (
        FAULT_EXIT_CODE
    )
    recover_until_fault("after_tombstone")
    transfer = Transfer.objects.get(kind=Transfer.Kind.TRANSFER)
    assert transfer.status == Transfer.Status.PENDING
    tombstone = TransferLeg.objects.using("db2").get(transfer_id=transfer.id, leg="debit")
    assert (tombstone.state, tombstone.account_id) == ("voided", None)
    assert Account.objects.using("db1").get(pk=bob.pk).pending_credits == Decimal("30.00")
    # The coordinator, waking up late, cannot decide any more: the tombstone holds the key.
    from transfers.engine.legs import leg_decide
    from transfers.errors import TransferRefused

    with pytest.raises(TransferRefused):
        leg_decide(transfer, "debit")
    recover_after_deadline()
    _assert_settled(transfer, alice, bob, Transfer.Status.ABORTED)


@pytest.mark.parametrize(("fault", "outcome"), CROSS + [(f"local:{f}", o) for f, o in LOCAL])
def test_crash_at_fault_point_then_recovery(make_account, fault, outcome):
    local = fault.startswith("local:")
    fault = fault.removeprefix("local:")
    alice = make_account("db1", "100.00")
    bob = make_account("db1" if local else "db2", "5.00")

    result = run_until_fault(fault, alice.number, bob.number, "30.00")
    assert result.returncode == FAULT_EXIT_CODE, result.stdout + result.stderr
    transfer = Transfer.objects.get(kind=Transfer.Kind.TRANSFER)
    assert not transfer.is_final

    recover_after_deadline()
    _assert_settled(transfer, alice, bob, outcome)


def test_crash_while_aborting_a_refused_transfer(actor, make_account):
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    account_freeze(actor=actor, number=bob.number)  # the credit leg is refused after the debit leg is prepared
    fault = "after_decide_abort"
    result = run_until_fault(fault, alice.number, bob.number, "30.00")
    assert result.returncode == FAULT_EXIT_CODE, result.stdout + result.stderr
    transfer = Transfer.objects.get(kind=Transfer.Kind.TRANSFER)
    assert transfer.status == Transfer.Status.ABORTED and transfer.failure_code == "account_frozen"
    assert Account.objects.using("db1").get(pk=alice.pk).pending_debits == Decimal("30.00")
    recover_after_deadline()
    fresh = Account.objects.using("db1").get(pk=alice.pk)
    assert (fresh.posted, fresh.pending_debits) == (Decimal("100.00"), Decimal("0.00"))


def test_crash_in_recovery_between_its_tombstone_and_the_abort(make_account):
    """Recovery itself killed after its tombstone decided the abort in the destination ledger,
    before the control plane knew: the next pass records ABORTED and voids the debit leg."""
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    result = run_until_fault("after_prepare_debit", alice.number, bob.number, "30.00")
    assert result.returncode == FAULT_EXIT_CODE
    recover_until_fault("after_tombstone")
    transfer = Transfer.objects.get(kind=Transfer.Kind.TRANSFER)
    assert transfer.status == Transfer.Status.PENDING
    tombstone = TransferLeg.objects.using("db2").get(transfer_id=transfer.id, leg="credit")
    assert (tombstone.state, tombstone.account_id, tombstone.amount) == ("voided", None, Decimal("0.00"))
    assert Account.objects.using("db1").get(pk=alice.pk).pending_debits == Decimal("30.00")
    recover_after_deadline()
    assert balances(alice, bob) == [Decimal("100.00"), Decimal("0.00")]
    assert Transfer.objects.get(kind=Transfer.Kind.TRANSFER).status == Transfer.Status.ABORTED


def test_void_before_prepare_leaves_a_tombstone(make_account):
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    result = run_until_fault("after_accept", alice.number, bob.number, "30.00")
    assert result.returncode == FAULT_EXIT_CODE
    transfer = Transfer.objects.get(kind=Transfer.Kind.TRANSFER)
    recover_after_deadline()
    # The coordinator wakes up late and tries to prepare: the tombstone refuses it.
    from transfers.errors import TransferRefused

    with pytest.raises(TransferRefused) as refused:
        leg_prepare(transfer)
    assert refused.value.error.code == "transfer_timed_out"
    fresh = Account.objects.using("db1").get(pk=alice.pk)
    assert (fresh.posted, fresh.pending_debits) == (Decimal("100.00"), Decimal("0.00"))


def test_concurrent_recovery_workers_finish_each_leg_exactly_once(make_account):
    pairs = [(make_account("db1", "100.00"), make_account("db2", "0.00")) for _ in range(4)]
    faults = ["after_decide_credit", "after_finish_debit", "after_accept", "after_prepare_debit"]
    for (alice, bob), fault in zip(pairs, faults, strict=True):
        assert run_until_fault(fault, alice.number, bob.number, "10.00").returncode == FAULT_EXIT_CODE
    later = timezone.now() + timedelta(seconds=settings.TRANSACTION_TIMEOUT + 5)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            report = transfers_recover(now=later, grace_seconds=0)
            errors.extend(RuntimeError(e) for e in report.errors)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    statuses = [t.status for t in Transfer.objects.filter(kind=Transfer.Kind.TRANSFER).order_by("created_at")]
    assert statuses == ["completed", "completed", "aborted", "aborted"]
    assert reconcile().ok


@pytest.mark.parametrize(
    ("fault", "expected"), [("after_decide_credit", "committed"), ("after_prepare_debit", "voided")]
)
def test_a_leg_whose_transfer_the_control_plane_lost_follows_the_ledgers_decision(
    request, make_account, fault, expected
):
    """A control plane restored from a backup taken before the transfer was accepted no longer
    knows it; the ledgers still hold the decision (the credit leg), and recovery follows it. The
    entries of a transfer it committed are then explained by nothing the control plane holds:
    reconciliation names them, for the operators to restore the transfer's record."""
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    assert run_until_fault(fault, alice.number, bob.number, "30.00").returncode == FAULT_EXIT_CODE
    transfer = Transfer.objects.get(kind=Transfer.Kind.TRANSFER)
    Transfer.objects.filter(pk=transfer.pk).delete()  # what the restore lost

    recover_after_deadline()
    debit = TransferLeg.objects.using("db1").get(transfer_id=transfer.id, leg="debit")
    assert debit.state == expected
    assert balances(alice, bob) == (
        [Decimal("70.00"), Decimal("30.00")] if expected == "committed" else [Decimal("100.00"), Decimal("0.00")]
    )
    if expected == "voided":
        assert reconcile().ok
        return
    request.applymarker(pytest.mark.books_may_not_balance)
    assert reconcile().discrepancies == [
        f"{account.ledger}: entry of {amount} on account {account.number} names transfer {transfer.id}, which the "
        "control plane does not know"
        for account, amount in ((alice, "-30.00"), (bob, "30.00"))
    ]


@pytest.mark.books_may_not_balance
def test_a_crash_between_an_accounts_commit_and_its_event_is_found_and_a_retry_opens_no_second_one():
    """Opening commits the account in its ledger, then its ``account.opened`` event in the control
    plane. Killed in between, the account is there without its event: reconciliation names it, and
    the retry under the same key gets that account back rather than a second one."""
    from accounts.services import account_open
    from audit.models import AuditEvent
    from bankcore.actors import Actor, Channel

    code = (
        "import django; django.setup();"
        "from accounts.services import account_open;"
        "from bankcore.actors import Actor, Channel;"
        "account_open(actor=Actor.system(Channel.COMMAND, 'crash-worker'), ledger='db2', holder='Half Opened',"
        " idempotency_key='open-crash')"
    )
    child = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(BANKCORE_FAULT_AT="after_account_insert"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=settings.BASE_DIR,
    )
    assert child.returncode == FAULT_EXIT_CODE, child.stderr
    [account] = Account.objects.using("db2").filter(idempotency_key="open-crash")
    assert not AuditEvent.objects.filter(object_type="account", object_id=account.number).exists()
    assert reconcile(audit_grace=timedelta(0)).discrepancies == [
        f"db2 account {account.number}: no account.opened event in the audit trail"
    ]
    again = account_open(
        actor=Actor.system(Channel.COMMAND, "crash-worker"),
        ledger="db2",
        holder="Half Opened",
        idempotency_key="open-crash",
    )
    assert again.replayed and again.pk == account.pk
    assert Account.objects.using("db2").filter(holder="Half Opened").count() == 1
