from decimal import Decimal
from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import Account, Entry, PartnerAccountLink
from audit.models import AuditEvent
from transfers.models import Transfer

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _seed(**options):
    out = StringIO()
    call_command("seed_demo", stdout=out, **options)
    return out.getvalue()


def _everything():
    """Every row the command can write: accounts and entries in each ledger, transfers, audit
    events, users and partner links."""
    return {
        "accounts": {ledger: Account.objects.using(ledger).count() for ledger in settings.LEDGERS},
        "entries": {ledger: Entry.objects.using(ledger).count() for ledger in settings.LEDGERS},
        "transfers": Transfer.objects.count(),
        "audit_events": AuditEvent.objects.count(),
        "users": User.objects.count(),
        "links": PartnerAccountLink.objects.count(),
    }


def test_seed_demo_is_idempotent(ledgers, monkeypatch):
    monkeypatch.setenv("DEMO_PASSWORD", "demo-pass-123")
    _seed(accounts_per_ledger=2, opening_balance="500.00")
    counts = {ledger: Account.objects.using(ledger).count() for ledger in ledgers}
    second = _seed(accounts_per_ledger=2, opening_balance="500.00")
    assert "0 new accounts" in second
    assert {ledger: Account.objects.using(ledger).count() for ledger in ledgers} == counts
    for ledger in ledgers:
        demo = Account.objects.using(ledger).filter(holder__startswith="Demo ")
        assert demo.count() == 2 and all(a.posted == 500 for a in demo)
    assert set(User.objects.values_list("username", flat=True)) >= {"teller", "supervisor", "auditor", "demo-partner"}
    assert User.objects.get(username="teller").check_password("demo-pass-123")
    for role in ("teller", "supervisor", "auditor"):
        user = User.objects.get(username=role)
        assert user.is_staff and not user.is_superuser
        assert list(user.groups.values_list("name", flat=True)) == [role]
    assert PartnerAccountLink.objects.filter(user__username="demo-partner").count() == 2 * len(ledgers)


@pytest.mark.parametrize("balance", ["1e3", "-1", "0", "abc"])
def test_seed_demo_refuses_a_bad_balance(balance):
    before = _everything()
    with pytest.raises(CommandError, match="opening-balance"):
        _seed(accounts_per_ledger=1, opening_balance=balance)
    assert _everything() == before


def test_seed_demo_refuses_a_balance_above_the_maximum_before_creating_anything():
    # given
    above = settings.MAX_TRANSFER_AMOUNT + Decimal("0.01")
    before = _everything()
    # when
    with pytest.raises(CommandError, match="MAX_TRANSFER_AMOUNT") as raised:
        _seed(accounts_per_ledger=2, opening_balance=str(above))
    # then: no account, entry, transfer, audit event, user or link
    assert "--opening-balance" in str(raised.value)
    assert _everything() == before
    assert not User.objects.filter(username="teller").exists()
