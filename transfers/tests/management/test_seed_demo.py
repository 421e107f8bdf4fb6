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
from transfers.services import transfer_cash_movement

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


class Killed(BaseException):
    """The process dying mid-run (nothing catches a BaseException on the way out)."""


def _demo(ledger):
    return Account.objects.using(ledger).filter(holder__startswith="Demo ").order_by("pk")


def test_seed_demo_is_idempotent(ledgers, monkeypatch, actor):
    monkeypatch.setenv("DEMO_PASSWORD", "demo-pass-123")
    _seed(accounts_per_ledger=2, opening_balance="500.00")
    # a demo account spent down to zero was funded once: a rerun must not fund it again
    spent = _demo(ledgers[0]).first()
    transfer_cash_movement(actor=actor, kind=Transfer.Kind.WITHDRAWAL, number=spent.number, amount="500.00")
    before = _everything()
    second = _seed(accounts_per_ledger=2, opening_balance="500.00")
    assert "0 new accounts" in second and "funded" not in second
    assert _everything() == before
    for ledger in ledgers:
        demo = _demo(ledger)
        assert demo.count() == 2
        assert all(a.posted == (0 if a.pk == spent.pk and ledger == spent.ledger else 500) for a in demo)
    assert set(User.objects.values_list("username", flat=True)) >= {"teller", "supervisor", "auditor", "demo-partner"}
    assert User.objects.get(username="teller").check_password("demo-pass-123")
    for role in ("teller", "supervisor", "auditor"):
        user = User.objects.get(username=role)
        assert user.is_staff and not user.is_superuser
        assert list(user.groups.values_list("name", flat=True)) == [role]
    assert PartnerAccountLink.objects.filter(user__username="demo-partner").count() == 2 * len(ledgers)


def test_seed_demo_funds_what_an_interrupted_run_left_unfunded(ledgers, monkeypatch):
    # given: a run killed after opening an account and before booking its opening deposit (the
    # two are separate commits), here after the first account of the first ledger was funded
    import transfers.services

    real_movement = transfers.services.transfer_cash_movement
    deposits: list[object] = []

    def deposit_then_die(**kwargs):
        if deposits:
            raise Killed
        deposits.append(real_movement(**kwargs))

    monkeypatch.setattr(transfers.services, "transfer_cash_movement", deposit_then_die)
    with pytest.raises(Killed):
        _seed(accounts_per_ledger=3, opening_balance="250.00")
    monkeypatch.undo()
    assert [a.posted for a in _demo(ledgers[0])] == [Decimal("250.00"), Decimal("0.00")]
    # when
    out = _seed(accounts_per_ledger=3, opening_balance="250.00")
    # then: the unfunded one is funded once, the missing ones are created funded
    assert "1 demo accounts left unfunded by an interrupted run funded" in out
    for ledger in ledgers:
        demo = _demo(ledger)
        assert demo.count() == 3
        for account in demo:
            assert account.posted == Decimal("250.00")
            assert Entry.objects.using(ledger).filter(account=account).count() == 1
    # and a further run changes nothing
    before = _everything()
    assert "0 new accounts" in _seed(accounts_per_ledger=3, opening_balance="250.00")
    assert _everything() == before


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
