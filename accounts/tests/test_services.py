"""Account services: each success, each refusal — and on refusal, nothing moved."""

from decimal import Decimal

import pytest
from django.conf import settings

from accounts.errors import (
    AccountClosed,
    AccountFrozen,
    AccountNotEmpty,
    AccountNotFound,
    InternalAccount,
    InvalidAccountState,
    InvalidHolder,
)
from accounts.models import Account, Entry
from accounts.numbers import account_number_make
from accounts.selectors import account_entries_sum, account_get, cash_account_get
from accounts.services import (
    UnknownLedgerAlias,
    account_close,
    account_freeze,
    account_open,
    account_unfreeze,
)
from audit.models import AuditEvent
from bankcore.actors import Actor, Channel
from bankcore.money import InvalidAmount, InvalidCurrency
from bankcore.testing.books import balances, number_of, world_snapshot
from transfers.errors import AmountAboveMaximum, IdempotencyKeyReused, InsufficientFunds, InvalidIdempotencyKey
from transfers.models import Transfer
from transfers.services import account_open_with_deposit, transfer_cash_movement

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

# One cent above the largest amount one movement may carry.
ABOVE_MAXIMUM = str(settings.MAX_TRANSFER_AMOUNT + Decimal("0.01"))
# Amounts ``money_parse`` refuses (the big ones need more digits than the decimal context's 28 once
# quantized to cents: refused by their size, never an InvalidOperation).
BAD_AMOUNTS = ["0", "-1", "-5.00", "1.001", "NaN", "1e3", "", 1.5, True, "9" * 27, 10**30, "9" * 30 + ".001"]


def cash_deposit(**kwargs):
    return transfer_cash_movement(kind=Transfer.Kind.DEPOSIT, **kwargs)


def cash_withdrawal(**kwargs):
    return transfer_cash_movement(kind=Transfer.Kind.WITHDRAWAL, **kwargs)


def entry_count(account) -> int:
    return Entry.objects.using(account.ledger).filter(account=account).count()


def untouched(*accounts):
    """What a refusal must leave as it was: how many accounts each ledger holds, and the given
    accounts' balances and status, every entry, leg, transfer and audit event (``world_snapshot``)."""
    return {
        "accounts_per_ledger": {ledger: Account.objects.using(ledger).count() for ledger in settings.LEDGERS},
        **world_snapshot(*accounts),
    }


def test_open_account_in_every_ledger(actor, ledgers):
    for ledger in ledgers:
        account = account_open(actor=actor, ledger=ledger, holder="  Li   Wei ")
        assert account.holder == "Li Wei"
        assert account.ledger == ledger
        assert account_get(number=number_of(account)).pk == account.pk
        assert (account.posted, account.pending_debits, account.pending_credits) == (0, 0, 0)
        assert account.currency == "CNY" and account.status == Account.Status.ACTIVE
        assert AuditEvent.objects.filter(action="account.opened", object_id=account.number).exists()


def test_open_with_opening_deposit_books_an_entry(actor):
    account = account_open_with_deposit(actor=actor, ledger="db2", holder="Wang Fang", opening_deposit="250.75")
    assert account.posted == Decimal("250.75")
    assert account_entries_sum(account=account) == Decimal("250.75")
    cash = cash_account_get(ledger="db2", currency="CNY")
    assert cash is not None and balances(cash) == [Decimal("-250.75")]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"holder": ""}, InvalidHolder),
        ({"holder": "x" * 201}, InvalidHolder),
        ({"holder": "bad\x00name"}, InvalidHolder),
        ({"holder": 12}, InvalidHolder),
        ({"currency": "cny"}, InvalidCurrency),
        ({"currency": "EURO"}, InvalidCurrency),
        ({"ledger": "db99"}, UnknownLedgerAlias),
        *(({"opening_deposit": amount}, InvalidAmount) for amount in BAD_AMOUNTS),
        ({"opening_deposit": ABOVE_MAXIMUM}, AmountAboveMaximum),
        ({"opening_deposit": ABOVE_MAXIMUM, "currency": "USD"}, AmountAboveMaximum),
    ],
)
def test_open_refusals_create_nothing(actor, fields, error):
    # given: no cash account yet either, which a refused opening must not create
    before = untouched()
    # when
    with pytest.raises(error) as raised:
        account_open_with_deposit(
            actor=actor, **{"ledger": "db1", "holder": "Li Wei", "opening_deposit": None, **fields}
        )
    # then: no account (customer or cash), no entry, no transfer, no audit event
    assert raised.value.code == error.code
    assert untouched() == before


def test_open_refuses_a_bad_deposit_even_where_a_cash_account_exists(actor, make_account):
    make_account("db1", "1.00")  # the ledger's CNY cash account now exists and has moved money
    before = untouched()
    for amount, error in (("-1", InvalidAmount), (ABOVE_MAXIMUM, AmountAboveMaximum)):
        with pytest.raises(error):
            account_open_with_deposit(actor=actor, ledger="db1", holder="Li Wei", opening_deposit=amount)
    assert untouched() == before


def test_a_refused_deposit_in_another_currency_changes_nothing(actor):
    account = account_open(actor=actor, ledger="db1", holder="Usd Holder", currency="USD")
    before = untouched(account)
    for amount, error in (("-1", InvalidAmount), (ABOVE_MAXIMUM, AmountAboveMaximum)):
        with pytest.raises(error):
            cash_deposit(actor=actor, number=account.number, amount=amount)
    assert untouched(account) == before


def test_open_with_the_largest_opening_deposit(actor):
    account = account_open_with_deposit(
        actor=actor, ledger="db1", holder="Li Wei", opening_deposit=settings.MAX_TRANSFER_AMOUNT
    )
    assert balances(account) == [settings.MAX_TRANSFER_AMOUNT]


def test_open_with_a_key_twice_opens_one_account_and_books_its_deposit_once(actor):
    first = account_open_with_deposit(
        actor=actor, ledger="db2", holder="Li Wei", opening_deposit="30.00", idempotency_key="o-1"
    )
    before = untouched(first)
    again = account_open_with_deposit(
        actor=actor, ledger="db2", holder=" Li  Wei ", opening_deposit="30.00", idempotency_key="o-1"
    )
    assert (again.pk, again.replayed, first.replayed) == (first.pk, True, False)
    assert untouched(first) == before and balances(first) == [Decimal("30.00")]
    assert AuditEvent.objects.filter(action="account.opened", object_id=first.number).count() == 1


@pytest.mark.parametrize(
    "changed", [{"holder": "Wang Fang"}, {"ledger": "db1"}, {"currency": "USD"}, {"allow_overdraft": True}]
)
def test_open_with_a_key_that_opened_another_account_is_refused(actor, changed):
    first = account_open(actor=actor, ledger="db2", holder="Li Wei", idempotency_key="o-2")
    before = untouched(first)
    with pytest.raises(IdempotencyKeyReused) as raised:
        account_open(actor=actor, **{"ledger": "db2", "holder": "Li Wei", **changed}, idempotency_key="o-2")
    assert raised.value.code == "idempotency_key_reused" and number_of(first) in raised.value.detail
    assert untouched(first) == before


def test_a_key_is_each_clients_own(actor):
    other = Actor.system(Channel.COMMAND, "someone-else")
    mine = account_open(actor=actor, ledger="db1", holder="Li Wei", idempotency_key="o-3")
    theirs = account_open(actor=other, ledger="db1", holder="Li Wei", idempotency_key="o-3")
    assert mine.pk != theirs.pk and not theirs.replayed


@pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9", "tab\tkey"])
def test_open_refuses_a_malformed_key_and_opens_nothing(actor, key):
    before = untouched()
    with pytest.raises(InvalidIdempotencyKey):
        account_open(actor=actor, ledger="db1", holder="Li Wei", idempotency_key=key)
    assert untouched() == before


@pytest.mark.slow
def test_one_key_raced_by_eight_workers_opens_one_account(actor):
    from bankcore.testing.concurrency import run_threads

    numbers: list[str] = []

    def work(index: int) -> None:
        account = account_open_with_deposit(
            actor=actor, ledger="db1", holder="Li Wei", opening_deposit="5.00", idempotency_key="o-race"
        )
        numbers.append(str(account.number))

    errors = run_threads(8, work)
    assert not errors, errors
    assert len(set(numbers)) == 1 and len(numbers) == 8
    opened = Account.objects.using("db1").get(number=numbers[0])
    assert balances(opened) == [Decimal("5.00")]
    assert Account.objects.using("db1").filter(kind=Account.Kind.CUSTOMER).count() == 1
    assert AuditEvent.objects.filter(action="account.opened").count() == 1


def test_deposit_and_withdraw(actor, make_account):
    account = make_account("db1", "100.00")
    cash_deposit(actor=actor, number=account.number, amount="0.10")
    cash_withdrawal(actor=actor, number=account.number, amount="50.05")
    assert balances(account) == [Decimal("50.05")]
    assert entry_count(account) == 3
    assert account_entries_sum(account=account) == Decimal("50.05")


@pytest.mark.parametrize(("service", "ledger"), [(cash_withdrawal, "db2"), (cash_deposit, "db1")])
@pytest.mark.parametrize(
    ("amount", "error"),
    [
        *((amount, InvalidAmount) for amount in BAD_AMOUNTS),
        (ABOVE_MAXIMUM, AmountAboveMaximum),
    ],
)
def test_cash_movement_refusals_move_nothing(actor, make_account, service, ledger, amount, error):
    account = make_account(ledger, "100.00")
    before = untouched(account)
    with pytest.raises(error) as raised:
        service(actor=actor, number=account.number, amount=amount)
    assert raised.value.code == error.code
    assert untouched(account) == before
    assert entry_count(account) == 1


def test_withdraw_beyond_the_balance_moves_nothing_and_records_the_refusal(actor, make_account):
    account = make_account("db2", "100.00")
    before = untouched(account)
    with pytest.raises(InsufficientFunds) as raised:
        cash_withdrawal(actor=actor, number=account.number, amount="100.01")
    assert raised.value.code == "insufficient_funds"
    # A refusal found while preparing is recorded on an ABORTED transfer, so that a replay
    # answers the same, with its audit event; nothing else changes.
    after = untouched(account)
    assert after["transfers"] == before["transfers"] + 1
    assert after["audit_events"] == before["audit_events"] + 1
    assert {**after, "transfers": 0, "audit_events": 0} == {**before, "transfers": 0, "audit_events": 0}
    aborted = Transfer.objects.get(source_account=account.number)
    assert (aborted.status, aborted.failure_code) == (Transfer.Status.ABORTED, "insufficient_funds")
    assert AuditEvent.objects.filter(action="transfer.aborted").count() == 1


def test_deposit_of_the_largest_amount(actor, make_account):
    account = make_account("db1", "0.00")
    cash_deposit(actor=actor, number=account.number, amount=str(settings.MAX_TRANSFER_AMOUNT))
    assert balances(account) == [settings.MAX_TRANSFER_AMOUNT]


def test_freeze_blocks_money_both_ways_until_unfrozen(actor, make_account):
    account = make_account("db1", "100.00")
    account_freeze(actor=actor, number=account.number, reason="court order")
    before = untouched(account)
    with pytest.raises(InvalidAccountState) as raised:
        account_freeze(actor=actor, number=account.number)
    assert raised.value.code == "invalid_account_state"
    assert untouched(account) == before
    for move in (cash_deposit, cash_withdrawal):
        with pytest.raises(AccountFrozen):
            move(actor=actor, number=account.number, amount="1.00")
    assert balances(account) == [Decimal("100.00")]
    account_unfreeze(actor=actor, number=account.number)
    cash_withdrawal(actor=actor, number=account.number, amount="1.00")
    assert balances(account) == [Decimal("99.00")]
    actions = list(AuditEvent.objects.filter(object_id=account.number).values_list("action", flat=True))
    assert "account.frozen" in actions and "account.unfrozen" in actions


def test_unfreeze_refuses_an_active_account(actor, make_account):
    # given
    account = make_account("db1", "100.00")
    before = untouched(account)
    # when
    with pytest.raises(InvalidAccountState) as raised:
        account_unfreeze(actor=actor, number=account.number, reason="mistake")
    # then
    assert raised.value.code == "invalid_account_state"
    assert untouched(account) == before
    assert Account.objects.using("db1").get(pk=account.pk).status == Account.Status.ACTIVE


def test_close_only_at_zero(actor, make_account):
    account = make_account("db2", "10.00")
    before = untouched(account)
    with pytest.raises(AccountNotEmpty) as raised:
        account_close(actor=actor, number=account.number)
    assert raised.value.code == "account_not_empty"
    assert untouched(account) == before
    cash_withdrawal(actor=actor, number=account.number, amount="10.00")
    account_close(actor=actor, number=account.number, reason="customer request")
    with pytest.raises(AccountClosed):
        cash_deposit(actor=actor, number=account.number, amount="1.00")
    with pytest.raises(AccountClosed):
        account_unfreeze(actor=actor, number=account.number)
    assert balances(account) == [Decimal("0.00")]


@pytest.mark.parametrize(
    ("pending", "fields"),
    [
        ({"pending_credits": Decimal("7.00")}, {}),
        # A held debit with nothing posted: only an account with an overdraft may be there.
        ({"pending_debits": Decimal("7.00")}, {"allow_overdraft": True}),
    ],
)
def test_close_refuses_an_account_with_only_pending_amounts(actor, make_account, pending, fields):
    # given: a zero posted balance with a transfer in flight, set directly (the engine holds
    # amounts in pending between prepare and finish)
    account = make_account("db1", "0.00", **fields)
    Account.objects.using("db1").filter(pk=account.pk).update(**pending)
    before = untouched(account)
    # when
    with pytest.raises(AccountNotEmpty) as raised:
        account_close(actor=actor, number=account.number)
    # then
    assert raised.value.code == "account_not_empty"
    assert untouched(account) == before
    assert Account.objects.using("db1").get(pk=account.pk).status == Account.Status.ACTIVE
    # the transfer "finishes": with nothing pending, the account can be closed
    Account.objects.using("db1").filter(pk=account.pk).update(pending_debits=0, pending_credits=0)
    account_close(actor=actor, number=account.number)


def test_close_refuses_a_closed_account(actor, make_account):
    account = make_account("db2")
    account_close(actor=actor, number=account.number)
    before = untouched(account)
    for change in (account_close, account_freeze, account_unfreeze):
        with pytest.raises(AccountClosed) as raised:
            change(actor=actor, number=account.number)
        assert raised.value.code == "account_closed"
    assert untouched(account) == before
    assert AuditEvent.objects.filter(object_id=account.number, action="account.closed").count() == 1


@pytest.mark.parametrize(
    "service",
    [account_freeze, account_unfreeze, account_close, cash_deposit, cash_withdrawal],
    ids=lambda service: service.__name__,
)
def test_account_services_refuse_an_unknown_account(actor, make_account, ledgers, service):
    # given: a well-formed number (valid check digits) in every ledger, of an account that does
    # not exist, next to a real one
    existing = make_account("db1", "5.00")
    before = untouched(existing)
    for ledger in ledgers:
        number = account_number_make(ledger_code=settings.LEDGERS[ledger], serial=10**9 + 7)
        kwargs = {"amount": "1.00"} if service in (cash_deposit, cash_withdrawal) else {}
        # when
        with pytest.raises(AccountNotFound) as raised:
            service(actor=actor, number=number, **kwargs)
        # then
        assert raised.value.code == "account_not_found"
    assert untouched(existing) == before


def test_internal_cash_account_cannot_be_frozen_or_closed(actor, make_account):
    make_account("db1", "1.00")
    cash = cash_account_get(ledger="db1", currency="CNY")
    assert cash is not None
    before = untouched(cash)
    for change in (account_freeze, account_unfreeze, account_close):
        with pytest.raises(InternalAccount) as raised:
            change(actor=actor, number=number_of(cash))
        assert raised.value.code == "internal_account"
    assert untouched(cash) == before


def test_other_currency_gets_its_own_cash_account(actor):
    account = account_open_with_deposit(
        actor=actor, ledger="db1", holder="Usd Holder", currency="USD", opening_deposit="5.00"
    )
    cash = cash_account_get(ledger="db1", currency="USD")
    assert cash is not None and balances(cash) == [Decimal("-5.00")]
    assert balances(account) == [Decimal("5.00")]
