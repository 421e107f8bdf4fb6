"""Account services: each success, each refusal — and on refusal, nothing moved."""

from decimal import Decimal

import pytest
from django.conf import settings

from accounts.errors import (
    AccountClosed,
    AccountFrozen,
    AccountNotEmpty,
    InternalAccount,
    InvalidAccountState,
    InvalidHolder,
)
from accounts.models import Account, Entry
from accounts.selectors import account_entries_sum, account_get, cash_account_get
from accounts.services import (
    UnknownLedgerAlias,
    account_close,
    account_deposit,
    account_freeze,
    account_open,
    account_unfreeze,
    account_withdraw,
)
from audit.models import AuditEvent
from bankcore.money import InvalidAmount, InvalidCurrency
from conftest import balances, world_snapshot
from transfers.errors import AmountAboveMaximum, InsufficientFunds

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

# One cent above the largest amount one movement may carry.
ABOVE_MAXIMUM = str(settings.MAX_TRANSFER_AMOUNT + Decimal("0.01"))
# Amounts ``money_parse`` refuses.
BAD_AMOUNTS = ["0", "-1", "-5.00", "1.001", "NaN", "1e3", "", 1.5, True]


def entry_count(account) -> int:
    return Entry.objects.using(account.ledger).filter(account=account).count()


def untouched(*accounts):  # type: ignore[no-untyped-def]
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
        assert account_get(number=account.number).pk == account.pk
        assert (account.posted, account.pending_debits, account.pending_credits) == (0, 0, 0)
        assert account.currency == "CNY" and account.status == Account.Status.ACTIVE
        assert AuditEvent.objects.filter(action="account.opened", object_id=account.number).exists()


def test_open_with_opening_deposit_books_an_entry(actor):
    account = account_open(actor=actor, ledger="db2", holder="Wang Fang", opening_deposit="250.75")
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
        account_open(actor=actor, **{"ledger": "db1", "holder": "Li Wei", **fields})
    # then: no account (customer or cash), no entry, no transfer, no audit event
    assert raised.value.code == error.code
    assert untouched() == before


def test_open_refuses_a_bad_deposit_even_where_a_cash_account_exists(actor, make_account):
    make_account("db1", "1.00")  # the ledger's CNY cash account now exists and has moved money
    before = untouched()
    for amount, error in (("-1", InvalidAmount), (ABOVE_MAXIMUM, AmountAboveMaximum)):
        with pytest.raises(error):
            account_open(actor=actor, ledger="db1", holder="Li Wei", opening_deposit=amount)
    assert untouched() == before


def test_open_with_the_largest_opening_deposit(actor):
    account = account_open(actor=actor, ledger="db1", holder="Li Wei", opening_deposit=settings.MAX_TRANSFER_AMOUNT)
    assert balances(account) == [settings.MAX_TRANSFER_AMOUNT]


def test_deposit_and_withdraw(actor, make_account):
    account = make_account("db1", "100.00")
    account_deposit(actor=actor, number=account.number, amount="0.10")
    account_withdraw(actor=actor, number=account.number, amount="50.05")
    assert balances(account) == [Decimal("50.05")]
    assert entry_count(account) == 3
    assert account_entries_sum(account=account) == Decimal("50.05")


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        ("100.01", InsufficientFunds),
        ("0", InvalidAmount),
        ("-5.00", InvalidAmount),
        ("1.001", InvalidAmount),
        ("NaN", InvalidAmount),
        ("1e3", InvalidAmount),
        (1.5, InvalidAmount),
        ("50000.01", AmountAboveMaximum),
    ],
)
def test_withdraw_refusals_move_nothing(actor, make_account, amount, error):
    account = make_account("db2", "100.00")
    with pytest.raises(error) as raised:
        account_withdraw(actor=actor, number=account.number, amount=amount)
    assert raised.value.code == error.code
    assert balances(account) == [Decimal("100.00")]
    assert entry_count(account) == 1


def test_freeze_blocks_money_both_ways_until_unfrozen(actor, make_account):
    account = make_account("db1", "100.00")
    account_freeze(actor=actor, number=account.number, reason="court order")
    for move in (account_deposit, account_withdraw):
        with pytest.raises(AccountFrozen):
            move(actor=actor, number=account.number, amount="1.00")
    assert balances(account) == [Decimal("100.00")]
    with pytest.raises(InvalidAccountState):
        account_freeze(actor=actor, number=account.number)
    account_unfreeze(actor=actor, number=account.number)
    account_withdraw(actor=actor, number=account.number, amount="1.00")
    assert balances(account) == [Decimal("99.00")]
    actions = list(AuditEvent.objects.filter(object_id=account.number).values_list("action", flat=True))
    assert "account.frozen" in actions and "account.unfrozen" in actions


def test_close_only_at_zero(actor, make_account):
    account = make_account("db2", "10.00")
    with pytest.raises(AccountNotEmpty):
        account_close(actor=actor, number=account.number)
    assert Account.objects.using("db2").get(pk=account.pk).status == Account.Status.ACTIVE
    account_withdraw(actor=actor, number=account.number, amount="10.00")
    account_close(actor=actor, number=account.number, reason="customer request")
    with pytest.raises(AccountClosed):
        account_deposit(actor=actor, number=account.number, amount="1.00")
    with pytest.raises(AccountClosed):
        account_unfreeze(actor=actor, number=account.number)
    assert balances(account) == [Decimal("0.00")]


def test_internal_cash_account_cannot_be_frozen_or_closed(actor, make_account):
    make_account("db1", "1.00")
    cash = cash_account_get(ledger="db1", currency="CNY")
    for change in (account_freeze, account_close):
        with pytest.raises(InternalAccount):
            change(actor=actor, number=cash.number)


def test_other_currency_gets_its_own_cash_account(actor):
    account = account_open(actor=actor, ledger="db1", holder="Usd Holder", currency="USD", opening_deposit="5.00")
    cash = cash_account_get(ledger="db1", currency="USD")
    assert cash is not None and balances(cash) == [Decimal("-5.00")]
    assert balances(account) == [Decimal("5.00")]
