from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from accounts.models import Account, PartnerAccountLink

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def _seed(**options):
    out = StringIO()
    call_command("seed_demo", stdout=out, **options)
    return out.getvalue()


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


def test_seed_demo_refuses_a_bad_balance():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="opening-balance"):
        _seed(accounts_per_ledger=1, opening_balance="1e3")
