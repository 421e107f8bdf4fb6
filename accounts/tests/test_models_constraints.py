"""The database itself refuses what the code must never write, even when the ORM is bypassed."""

from decimal import Decimal

import pytest
from django.db import DatabaseError, transaction
from django.db.models import F

from accounts.models import Account, Entry

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _refused(ledger, **update):
    with pytest.raises(DatabaseError):
        with transaction.atomic(using=ledger):
            Account.objects.using(ledger).filter(**update.pop("where")).update(**update)


def test_database_refuses_overdraft(make_account):
    """Given 100.00, when SQL takes 100.01 posted or pending, then the database refuses; nothing moved."""
    account = make_account("db1", "100.00")
    _refused("db1", where={"pk": account.pk}, posted=F("posted") - Decimal("100.01"))
    _refused("db1", where={"pk": account.pk}, pending_debits=Decimal("100.01"))
    assert Account.objects.using("db1").get(pk=account.pk).posted == Decimal("100.00")


def test_database_refuses_negative_pending(make_account):
    """Given an account, when SQL sets a negative pending amount, then the database refuses."""
    account = make_account("db2", "100.00")
    _refused("db2", where={"pk": account.pk}, pending_debits=Decimal("-0.01"))
    _refused("db2", where={"pk": account.pk}, pending_credits=Decimal("-0.01"))


def test_overdraft_account_may_go_negative(make_account):
    """Given an account with overdraft, when SQL takes it below zero, then the database allows it."""
    account = make_account("db1", "0.00", allow_overdraft=True)
    Account.objects.using("db1").filter(pk=account.pk).update(posted=Decimal("-5.00"))
    Account.objects.using("db1").filter(pk=account.pk).update(posted=Decimal("0.00"))


def test_database_refuses_zero_entry_and_a_second_entry_for_one_transfer(make_account):
    """Given an entry, when a zero one or a second one for its transfer is inserted, then both are refused."""
    account = make_account("db1", "10.00")
    entry = Entry.objects.using("db1").get(account=account)
    with pytest.raises(DatabaseError), transaction.atomic(using="db1"):
        Entry.objects.using("db1").create(
            account=account, amount=0, balance_after=10, kind="deposit", transfer_id=entry.transfer_id
        )
    with pytest.raises(DatabaseError), transaction.atomic(using="db1"):
        Entry.objects.using("db1").create(
            account=account, amount=1, balance_after=11, kind="deposit", transfer_id=entry.transfer_id
        )


def test_entries_are_immutable_through_the_orm(make_account):
    """Given an entry, when the ORM saves a change to it or deletes it, then both raise."""
    account = make_account("db1", "10.00")
    entry = Entry.objects.using("db1").get(account=account)
    entry.amount = Decimal("99.00")
    with pytest.raises(RuntimeError):
        entry.save(using="db1")
    with pytest.raises(RuntimeError):
        entry.delete()
