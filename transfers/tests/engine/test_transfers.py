"""The accounting story, end to end, on real MariaDB servers (one per ledger)."""

from decimal import Decimal

import pytest
from django.conf import settings

from accounts.errors import AccountClosed, AccountFrozen, AccountNotFound, InternalAccount
from accounts.models import Account, Entry
from accounts.numbers import InvalidAccountNumber, account_number_make
from accounts.services import account_close, account_freeze, account_open
from audit.models import AuditEvent
from bankcore.actors import Actor, Channel
from bankcore.money import InvalidAmount, InvalidCurrency
from bankcore.testing.books import NOTHING_HELD, balances, held, number_of
from transfers.errors import (
    AmountAboveMaximum,
    CurrencyMismatch,
    DailyLimitExceeded,
    IdempotencyKeyReused,
    InsufficientFunds,
    InvalidReference,
    SameAccount,
    TransferAlreadyReversed,
    TransferNotFound,
    TransferNotReversible,
)
from transfers.models import Transfer, TransferLeg
from transfers.services import transfer_cash_movement, transfer_create, transfer_reverse

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def snapshot(*accounts):
    """Everything a refusal must leave untouched."""
    return (
        [
            (a.posted, a.pending_debits, a.pending_credits)
            for a in (Account.objects.using(x.ledger).get(pk=x.pk) for x in accounts)
        ],
        sum(Entry.objects.using(ledger).count() for ledger in settings.LEDGERS),
        sum(
            TransferLeg.objects.using(ledger).exclude(state=TransferLeg.State.VOIDED).count()
            for ledger in settings.LEDGERS
        ),
    )


@pytest.mark.ledgers3
def test_same_ledger_transfer(actor, make_account):
    alice, bob = make_account("db1", "1000.00"), make_account("db1", "10.00")
    transfer = transfer_create(
        actor=actor, source_account=alice.number, destination_account=bob.number, amount="125.50", reference="rent"
    )
    assert transfer.status == Transfer.Status.COMPLETED and not transfer.is_cross_ledger
    assert balances(alice, bob) == [Decimal("874.50"), Decimal("135.50")]
    entries = Entry.objects.using("db1").filter(transfer_id=transfer.id).order_by("amount")
    assert [(e.amount, e.balance_after) for e in entries] == [
        (Decimal("-125.50"), Decimal("874.50")),
        (Decimal("125.50"), Decimal("135.50")),
    ]
    assert AuditEvent.objects.filter(action="transfer.completed", object_id=str(transfer.id)).exists()


@pytest.mark.ledgers3
def test_cross_ledger_transfer_between_every_pair_of_ledgers(actor, make_account, ledgers):
    accounts = {ledger: make_account(ledger, "500.00") for ledger in ledgers}
    for source in ledgers:
        for destination in ledgers:
            if source == destination:
                continue
            transfer = transfer_create(
                actor=actor,
                source_account=accounts[source].number,
                destination_account=accounts[destination].number,
                amount="10.00",
            )
            assert transfer.status == Transfer.Status.COMPLETED and transfer.is_cross_ledger
            legs = {
                leg.leg: leg.state
                for ledger in ledgers
                for leg in TransferLeg.objects.using(ledger).filter(transfer_id=transfer.id)
            }
            assert legs == {"debit": "committed", "credit": "committed"}
    assert balances(*accounts.values()) == [Decimal("500.00")] * len(ledgers)
    assert held(*accounts.values()) == [NOTHING_HELD] * len(accounts)


def test_reversal_moves_the_money_back_once(actor, make_account):
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    original = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="40.00")
    reversal = transfer_reverse(actor=actor, transfer_id=original.id)
    assert reversal.status == Transfer.Status.COMPLETED and reversal.reversal_of_id == original.id
    assert reversal.kind == Transfer.Kind.REVERSAL
    assert balances(alice, bob) == [Decimal("100.00"), Decimal("0.00")]
    with pytest.raises(TransferAlreadyReversed):
        transfer_reverse(actor=actor, transfer_id=original.id)
    with pytest.raises(TransferNotReversible):
        transfer_reverse(actor=actor, transfer_id=reversal.id)
    with pytest.raises(TransferNotFound):
        transfer_reverse(actor=actor, transfer_id="00000000-0000-0000-0000-000000000000")
    with pytest.raises(TransferNotFound):
        transfer_reverse(actor=actor, transfer_id="not-a-uuid")
    assert balances(alice, bob) == [Decimal("100.00"), Decimal("0.00")]


def test_reversal_refused_when_the_money_is_gone_and_possible_once_it_is_back(actor, make_account):
    alice, bob, carol = make_account("db1", "100.00"), make_account("db2", "0.00"), make_account("db2", "0.00")
    original = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="40.00")
    transfer_create(actor=actor, source_account=bob.number, destination_account=carol.number, amount="30.00")
    before = snapshot(alice, bob, carol)
    with pytest.raises(InsufficientFunds) as refused:
        transfer_reverse(actor=actor, transfer_id=original.id)
    assert refused.value.transfer.status == Transfer.Status.ABORTED
    assert snapshot(alice, bob, carol) == before
    transfer_create(actor=actor, source_account=carol.number, destination_account=bob.number, amount="30.00")
    assert transfer_reverse(actor=actor, transfer_id=original.id).status == Transfer.Status.COMPLETED
    assert balances(alice, bob, carol) == [Decimal("100.00"), Decimal("0.00"), Decimal("0.00")]


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        ("0", InvalidAmount),
        ("0.00", InvalidAmount),
        ("-1.00", InvalidAmount),
        ("1.005", InvalidAmount),
        ("NaN", InvalidAmount),
        ("Infinity", InvalidAmount),
        ("1E+2", InvalidAmount),
        ("1e2", InvalidAmount),
        ("0x10", InvalidAmount),
        (" 1.00 ", None),  # surrounding blanks are tolerated
        ("1_000", InvalidAmount),
        ("１００", InvalidAmount),
        ("9" * 25, InvalidAmount),
        (10.0, InvalidAmount),
        (True, InvalidAmount),
        (None, InvalidAmount),
        ("50000.01", AmountAboveMaximum),
    ],
)
def test_amount_refusals_move_nothing(actor, make_account, amount, error):
    alice, bob = make_account("db1", "50000.00"), make_account("db2")
    before = snapshot(alice, bob)
    transfers_before = Transfer.objects.count()
    if error is None:
        transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount=amount)
        return
    with pytest.raises(error) as refused:
        transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount=amount)
    assert refused.value.code == error.code
    assert snapshot(alice, bob) == before and Transfer.objects.count() == transfers_before


def _refusal_cases(make_account, actor):
    alice = make_account("db1", "100.00")
    bob = make_account("db2", "0.00")
    frozen = make_account("db2", "50.00")
    account_freeze(actor=actor, number=frozen.number)
    closed = make_account("db1", "0.00")
    account_close(actor=actor, number=closed.number)
    usd = account_open(actor=actor, ledger="db2", holder="Dollar", currency="USD")
    missing = account_number_make(ledger_code=settings.LEDGERS["db2"], serial=987654)
    typo = alice.number[:-1] + str((int(alice.number[-1]) + 1) % 10)
    return (
        alice,
        bob,
        [
            (dict(source_account=alice.number, destination_account=bob.number, amount="100.01"), InsufficientFunds),
            (dict(source_account=alice.number, destination_account=alice.number, amount="1.00"), SameAccount),
            (dict(source_account=alice.number, destination_account=missing, amount="1.00"), AccountNotFound),
            (dict(source_account=missing, destination_account=alice.number, amount="1.00"), AccountNotFound),
            (dict(source_account=typo, destination_account=bob.number, amount="1.00"), InvalidAccountNumber),
            (dict(source_account=frozen.number, destination_account=alice.number, amount="1.00"), AccountFrozen),
            (dict(source_account=alice.number, destination_account=frozen.number, amount="1.00"), AccountFrozen),
            (dict(source_account=alice.number, destination_account=closed.number, amount="1.00"), AccountClosed),
            (dict(source_account=alice.number, destination_account=usd.number, amount="1.00"), CurrencyMismatch),
            (
                dict(source_account=alice.number, destination_account=bob.number, amount="1.00", currency="USD"),
                CurrencyMismatch,
            ),
            (
                dict(source_account=alice.number, destination_account=bob.number, amount="1.00", currency="usd"),
                InvalidCurrency,
            ),
            (
                dict(source_account=alice.number, destination_account=bob.number, amount="1.00", reference="x" * 141),
                InvalidReference,
            ),
            (
                dict(source_account=alice.number, destination_account=bob.number, amount="1.00", reference="a\nb"),
                InvalidReference,
            ),
        ],
        (frozen, closed, usd),
    )


def test_every_refusal_has_a_code_and_moves_nothing(actor, make_account):
    alice, bob, cases, others = _refusal_cases(make_account, actor)
    for fields, error in cases:
        before = snapshot(alice, bob, *others)
        with pytest.raises(error) as refused:
            transfer_create(actor=actor, **fields)
        assert refused.value.code == error.code, fields
        assert snapshot(alice, bob, *others) == before, fields


@pytest.mark.parametrize("shared", [True, False], ids=["three-commits", "five-commits"])
@pytest.mark.parametrize(("source_ledger", "destination_ledger"), [("db1", "db2"), ("db2", "db1")])
def test_refusals_either_way_round_and_by_either_protocol_move_nothing(
    actor, make_account, settings, shared, source_ledger, destination_ledger
):
    """db1 shares the control plane's server: from db1 the debit is prepared with the accept and
    the credit decides; towards db1 the credit is prepared (its amount held in pending credits)
    and the debit decides, so a refusal of the debit must release that hold. Without shared
    commits both directions run the five-step protocol. Each refusal is recorded, once, as an
    aborted transfer with its code, and nothing moved."""
    settings.BANKCORE_SHARED_COMMITS = shared
    settings.DAILY_TRANSFER_LIMIT = Decimal("50.00")
    alice, bob = make_account(source_ledger, "100.00"), make_account(destination_ledger, "0.00")
    frozen = make_account(destination_ledger, "0.00")
    account_freeze(actor=actor, number=frozen.number)
    cases = [
        (bob, "100.01", InsufficientFunds),
        (bob, "60.00", DailyLimitExceeded),
        (frozen, "1.00", AccountFrozen),
    ]
    for destination, amount, error in cases:
        before = snapshot(alice, bob, frozen)
        with pytest.raises(error) as refused:
            transfer_create(
                actor=actor, source_account=alice.number, destination_account=destination.number, amount=amount
            )
        assert snapshot(alice, bob, frozen) == before, error
        aborted = refused.value.transfer
        aborted.refresh_from_db()
        assert (aborted.status, aborted.failure_code) == (Transfer.Status.ABORTED, error.code)
        assert AuditEvent.objects.filter(object_id=str(aborted.id), action="transfer.aborted").count() == 1
    done = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="30.00")
    assert done.status == Transfer.Status.COMPLETED
    assert balances(alice, bob) == [Decimal("70.00"), Decimal("30.00")]
    assert held(alice, bob) == [NOTHING_HELD] * 2
    assert AuditEvent.objects.filter(object_id=str(done.id), action="transfer.completed").count() == 1


@pytest.mark.parametrize("shared", [True, False], ids=["three-commits", "five-commits"])
@pytest.mark.parametrize(
    ("customer_ledger", "cash_ledger"), [("db1", "db1"), ("db2", "db2"), ("db1", "db2"), ("db2", "db1")]
)
def test_a_transfer_naming_a_ledgers_cash_account_is_refused_and_recorded(
    actor, make_account, settings, shared, customer_ledger, cash_ledger
):
    """The cash accounts move only by cash deposits and withdrawals: a plain transfer from or to
    one, in one ledger or across two, by either protocol, is refused under the account's lock
    (the SQL verdict and its Python explanation agree), recorded once, and nothing moves."""
    from accounts.services import cash_account_ensure

    settings.BANKCORE_SHARED_COMMITS = shared
    alice = make_account(customer_ledger, "100.00")
    cash = cash_account_ensure(ledger=cash_ledger, currency=alice.currency)
    for source, destination in ((alice, cash), (cash, alice)):
        before = snapshot(alice, cash)
        with pytest.raises(InternalAccount) as refused:
            transfer_create(
                actor=actor, source_account=number_of(source), destination_account=number_of(destination), amount="1.00"
            )
        assert snapshot(alice, cash) == before, (source, destination)
        aborted = refused.value.transfer
        aborted.refresh_from_db()
        assert (aborted.status, aborted.failure_code) == (Transfer.Status.ABORTED, "internal_account")
    assert balances(alice) == [Decimal("100.00")] and held(alice, cash) == [NOTHING_HELD] * 2


def test_a_cash_deposit_is_reversed_through_the_cash_account(actor, make_account):
    """A reversal is no plain transfer: a deposit's reversal takes the money back to the cash
    account it came from."""
    alice = make_account("db2")
    deposit = transfer_cash_movement(actor=actor, kind=Transfer.Kind.DEPOSIT, number=alice.number, amount="40.00")
    reversal = transfer_reverse(actor=actor, transfer_id=deposit.id)
    assert reversal.status == Transfer.Status.COMPLETED
    assert balances(alice) == [Decimal("0.00")]


def test_daily_limit_counts_pending_and_completed_debits_of_the_business_day(actor, make_account, settings):
    settings.DAILY_TRANSFER_LIMIT = Decimal("100.00")
    alice, bob = make_account("db1", "1000.00"), make_account("db2")
    transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="60.00")
    transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="40.00")
    before = snapshot(alice, bob)
    with pytest.raises(DailyLimitExceeded):
        transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="0.01")
    assert snapshot(alice, bob) == before
    # A pending (prepared, undecided) debit counts too.
    carol = make_account("db1", "1000.00")
    transfer = Transfer.objects.create(
        source_account=carol.number,
        source_ledger="db1",
        destination_account=bob.number,
        destination_ledger="db2",
        amount=Decimal("90.00"),
        currency="CNY",
        client_id="t",
        request_hash="x",
        business_date=transfer_business_date(),
        deadline=Transfer._meta.get_field("deadline").to_python("2099-01-01T00:00:00+00:00"),
        channel=Channel.SYSTEM,
    )
    from transfers.engine.legs import leg_prepare

    leg_prepare(transfer)
    with pytest.raises(DailyLimitExceeded):
        transfer_create(actor=actor, source_account=carol.number, destination_account=bob.number, amount="10.01")
    # Withdrawals at the counter are not transfers: the daily transfer limit does not apply.
    transfer_cash_movement(actor=actor, kind=Transfer.Kind.WITHDRAWAL, number=alice.number, amount="500.00")
    from transfers.recovery import transfers_recover

    Transfer.objects.filter(pk=transfer.pk).update(
        deadline=Transfer._meta.get_field("deadline").to_python("2000-01-01T00:00:00+00:00")
    )
    transfers_recover(grace_seconds=0)


def transfer_business_date():
    from transfers.services import business_date_today

    return business_date_today()


def test_idempotent_replay_returns_the_first_outcome(actor, make_account):
    alice, bob = make_account("db1", "100.00"), make_account("db2")
    first = transfer_create(
        actor=actor, source_account=alice.number, destination_account=bob.number, amount="10.00", idempotency_key="k-1"
    )
    again = transfer_create(
        actor=actor, source_account=alice.number, destination_account=bob.number, amount="10.00", idempotency_key="k-1"
    )
    assert again.id == first.id and again.replayed and not first.replayed
    assert balances(alice, bob) == [Decimal("90.00"), Decimal("10.00")]
    with pytest.raises(IdempotencyKeyReused):
        transfer_create(
            actor=actor,
            source_account=alice.number,
            destination_account=bob.number,
            amount="10.01",
            idempotency_key="k-1",
        )
    # The same key from another client is another request.
    other = Actor.system(Channel.API, "another-client")
    second = transfer_create(
        actor=other, source_account=alice.number, destination_account=bob.number, amount="10.00", idempotency_key="k-1"
    )
    assert second.id != first.id
    assert balances(alice, bob) == [Decimal("80.00"), Decimal("20.00")]


def test_a_refusal_is_replayed_not_retried(actor, make_account):
    alice, bob = make_account("db1", "5.00"), make_account("db2")
    with pytest.raises(InsufficientFunds) as first:
        transfer_create(
            actor=actor,
            source_account=alice.number,
            destination_account=bob.number,
            amount="10.00",
            idempotency_key="k-2",
        )

    transfer_cash_movement(actor=actor, kind=Transfer.Kind.DEPOSIT, number=alice.number, amount="100.00")
    with pytest.raises(InsufficientFunds) as replay:
        transfer_create(
            actor=actor,
            source_account=alice.number,
            destination_account=bob.number,
            amount="10.00",
            idempotency_key="k-2",
        )
    assert replay.value.transfer.id == first.value.transfer.id and replay.value.replayed
    assert balances(alice, bob) == [Decimal("105.00"), Decimal("0.00")]


def test_an_update_that_missed_an_account_which_is_fine_by_the_lock_applies_under_it(actor, make_account, monkeypatch):
    """Where statements are not batched (SQLite, any Django atomic block) the conditional update
    is the check, made at once; when it changes nothing, the engine finds out why under the row
    lock. If by then nothing is wrong (the account was unfrozen in between), the change applies
    under that lock, once."""
    from django.db import transaction
    from django.utils import timezone

    from transfers import ledger_sql
    from transfers.engine.checks import leg_change_checked

    real = ledger_sql.account_change_checked
    calls: list[str] = []

    def missing_once(ledger, **kwargs):
        calls.append(kwargs["field"])
        if len(calls) == 1:
            return False, None, Decimal("0.00")
        return real(ledger, **kwargs)

    monkeypatch.setattr(ledger_sql, "account_change_checked", missing_once)
    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    transfer = Transfer(
        source_account=alice.number,
        source_ledger="db1",
        destination_account=bob.number,
        destination_ledger="db2",
        amount=Decimal("30.00"),
        currency="CNY",
        business_date=transfer_business_date(),
    )
    with transaction.atomic(using="db1"):
        assert leg_change_checked(transfer, "debit", field="pending_debits", now=timezone.now()) is None
        assert Account.objects.using("db1").get(pk=alice.pk).pending_debits == Decimal("30.00")
        transaction.set_rollback(True, using="db1")
    assert calls == ["pending_debits", "pending_debits"]
    assert Account.objects.using("db1").get(pk=alice.pk).pending_debits == Decimal("0.00")


@pytest.mark.parametrize(("source_ledger", "destination_ledger"), [("db1", "db2"), ("db2", "db1")])
def test_a_deferred_check_that_refused_an_account_which_is_fine_by_the_lock_is_run_again(
    actor, make_account, monkeypatch, source_ledger, destination_ledger
):
    """Batched, a step's checks go with its writes and COMMIT in one round trip, the writes
    conditional on them. When they refused (here: as if the account's currency had differed for
    a moment) nothing of the step is written; the account, checked under its lock, has nothing
    wrong by then, so the step runs again — the home leg's prepare, after the accept committed
    (the debit from db1, with its daily limit; the credit towards db1). Exactly once either way."""
    from transfers import ledger_sql

    real = ledger_sql.account_change_checked_deferred
    calls: list[str] = []

    def refusing_once(ledger, **kwargs):
        calls.append(kwargs["field"])
        if len(calls) == 1:
            kwargs["currency"] = "XXX"
        return real(ledger, **kwargs)

    monkeypatch.setattr(ledger_sql, "account_change_checked_deferred", refusing_once)
    alice, bob = make_account(source_ledger, "100.00"), make_account(destination_ledger, "0.00")
    done = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="30.00")
    assert done.status == Transfer.Status.COMPLETED
    first = "pending_debits" if source_ledger == "db1" else "pending_credits"
    assert calls[:2] == [first, first]
    assert balances(alice, bob) == [Decimal("70.00"), Decimal("30.00")]
    assert held(alice, bob) == [NOTHING_HELD] * 2
    assert Entry.objects.using(bob.ledger).filter(account_id=bob.pk, transfer_id=done.id).count() == 1
    assert AuditEvent.objects.filter(object_id=str(done.id), action="transfer.completed").count() == 1


def test_finishing_at_home_a_second_time_claims_nothing_and_writes_nothing(actor, make_account):
    """The finish at home claims the home leg and the transfer in one update and writes the
    posting, its entry and the audit event only with that claim, all in the round trip of its
    COMMIT. Run again (as if recovery had finished it first), it finds nothing to claim and
    writes nothing: no second posting, entry or event."""
    from transfers.engine.home import home_finish

    alice, bob = make_account("db1", "100.00"), make_account("db2", "0.00")
    done = transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="30.00")
    before = snapshot(alice, bob), AuditEvent.objects.count()
    home_finish(done, actor, "debit")
    assert (snapshot(alice, bob), AuditEvent.objects.count()) == before
    done.refresh_from_db()
    assert done.status == Transfer.Status.COMPLETED
    assert balances(alice, bob) == [Decimal("70.00"), Decimal("30.00")]


@pytest.mark.parametrize(("source_ledger", "destination_ledger"), [("db1", "db2"), ("db2", "db1")])
def test_a_refused_home_check_whose_account_stays_locked_aborts_busy_and_holds_nothing(
    actor, make_account, monkeypatch, source_ledger, destination_ledger
):
    """The home leg's check, deferred into the accept's commit, refused; explaining why needs the
    account's row lock, and that lock is given up on: the transfer the accept recorded is aborted
    as busy, once, with nothing held and nothing moved."""
    from bankcore.db import LockConflictGaveUp
    from transfers import ledger_sql
    from transfers.engine import checks
    from transfers.errors import LedgerBusy

    real = ledger_sql.account_change_checked_deferred

    def refusing(ledger, **kwargs):
        kwargs["currency"] = "XXX"
        return real(ledger, **kwargs)

    def gives_up(*args, **kwargs):
        raise LockConflictGaveUp(1205, "Lock wait timeout exceeded")

    monkeypatch.setattr(ledger_sql, "account_change_checked_deferred", refusing)
    monkeypatch.setattr(checks, "leg_lock_and_check", gives_up)
    alice, bob = make_account(source_ledger, "100.00"), make_account(destination_ledger, "0.00")
    before = snapshot(alice, bob)
    with pytest.raises(LedgerBusy) as refused:
        transfer_create(actor=actor, source_account=alice.number, destination_account=bob.number, amount="30.00")
    assert snapshot(alice, bob) == before
    aborted = Transfer.objects.get(pk=refused.value.transfer.pk)
    assert (aborted.status, aborted.failure_code) == (Transfer.Status.ABORTED, "ledger_busy")
    assert AuditEvent.objects.filter(object_id=str(aborted.id), action="transfer.aborted").count() == 1
    assert held(alice, bob) == [NOTHING_HELD] * 2
