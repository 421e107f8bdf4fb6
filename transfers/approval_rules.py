"""Four eyes, who waits and who decides: the rule every door asks before a movement executes.

Who waits, and when (``approval_required``): staff (``audit.roles.acts_for_bank``) whose movement
would take past its limit either the maker's total on one account in the business day
(Asia/Shanghai; the account debited, or credited by a deposit) or the maker's total of the day
over all accounts. Totals count the maker's movements of the day that were not aborted and every
request of theirs still waiting (pending or approved), so two slips of 9,000 from one account
wait as one of 18,000 would. The per-account limit is ``APPROVAL_THRESHOLD`` for a teller and
``SOLO_LIMIT`` for a supervisor (whose request another supervisor decides); the daily one is
``APPROVAL_MAKER_DAILY_THRESHOLD`` for both. One maker's decisions are serialised
(``maker_serialised``), so two submissions at once cannot both read the total from before the
other. Who decides (``is_checker``): a supervisor by role, never a superuser's blanket permissions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import DecimalField, Q, Sum, Value
from django.db.models.functions import Coalesce

from accounts.numbers import InvalidAccountNumber, account_number_parse
from audit.roles import SUPERUSER_WITHOUT_ROLE, acts_for_bank, role_permits
from bankcore.db import named_lock
from transfers.errors import LedgerBusy, RoleRequired
from transfers.models import Approval, Transfer
from transfers.services import business_date_today

Status = Approval.Status
Kind = Approval.Kind


APPROVE_PERMISSION = "transfers.approve_approval"


# The permission each kind of movement needs, for staff.
MOVEMENT_PERMISSIONS: dict[str, str] = {
    Kind.TRANSFER: "transfers.add_transfer",
    Kind.DEPOSIT: "accounts.handle_cash",
    Kind.WITHDRAWAL: "accounts.handle_cash",
}


def approval_required(*, user: Any, amount: Decimal, kind: str = Kind.TRANSFER, account: str = "") -> str | None:
    """Why ``user``'s movement of ``amount`` must wait for a second pair of eyes, or None when it
    may execute at once. ``account`` is the customer account the movement debits (a transfer's or
    withdrawal's source) or credits (a deposit's destination). See the module's docstring."""
    if not acts_for_bank(user):
        return None
    supervisor = is_checker(user)
    limit = settings.SOLO_LIMIT if supervisor else settings.APPROVAL_THRESHOLD
    name = "SOLO_LIMIT" if supervisor else "APPROVAL_THRESHOLD"
    if amount > limit:
        return f"{amount} is above {name} ({limit})"
    on_account, of_day = _maker_day_totals(maker_id=user.pk, account=account)
    if on_account + amount > limit:
        return (
            f"with what you moved on this account today or asked to ({on_account}), {on_account + amount} "
            f"is above {name} ({limit})"
        )
    daily = settings.APPROVAL_MAKER_DAILY_THRESHOLD
    if of_day + amount > daily:
        return (
            f"with what you moved today or asked to ({of_day}), {of_day + amount} is above "
            f"APPROVAL_MAKER_DAILY_THRESHOLD ({daily})"
        )
    return None


def _on_account(number: str) -> Q:
    """A movement of ``number``: debiting it (transfer, withdrawal) or crediting it by a deposit."""
    return Q(kind__in=[Kind.TRANSFER, Kind.WITHDRAWAL], source_account=number) | Q(
        kind=Kind.DEPOSIT, destination_account=number
    )


_ZERO = Value(Decimal("0.00"), output_field=DecimalField(max_digits=20, decimal_places=2))


def _maker_day_totals(*, maker_id: int, account: str) -> tuple[Decimal, Decimal]:
    """(on ``account``, over all accounts): the maker's movements of this business day that were
    not aborted (a waiting request's hold among them), plus their requests still waiting (pending
    or approved, whatever their day) whose hold is not.
    Reversals are a supervisor's correction of a movement already counted, and are not."""
    try:
        number = account_number_parse(account).number if account else ""
    except InvalidAccountNumber:
        number = ""  # refused by the service that runs it; nothing of it to count
    on_account = _on_account(number) if number else Q(pk__in=[])
    moved = (
        Transfer.objects.filter(created_by_id=maker_id, business_date=business_date_today())
        .exclude(status=Transfer.Status.ABORTED)
        .exclude(kind=Transfer.Kind.REVERSAL)
    )
    # A waiting request's hold is a transfer of its own: counted there, when it is one of ``moved``.
    waiting = Approval.objects.filter(maker_id=maker_id, status__in=[Status.PENDING, Status.APPROVED]).exclude(
        transfer__in=moved
    )
    totals = []
    for rows in (moved, waiting):
        totals.append(
            rows.aggregate(
                account=Coalesce(Sum("amount", filter=on_account), _ZERO),
                day=Coalesce(Sum("amount"), _ZERO),
            )
        )
    return (
        Decimal(totals[0]["account"]) + Decimal(totals[1]["account"]),
        Decimal(totals[0]["day"]) + Decimal(totals[1]["day"]),
    )


def is_checker(user: Any) -> bool:
    """A supervisor: holds the approve permission through a role. A superuser's blanket
    permissions do not count — superusers administer, they are nobody's second pair of eyes."""
    return role_permits(user, APPROVE_PERMISSION)


def role_check(*, user: Any, permission: str) -> None:
    """Refuse a superuser who does not hold ``permission`` through a role (``RoleRequired``):
    whatever Django's ``has_perm`` says, superusers move no money and change no account."""
    if user.is_superuser and not role_permits(user, permission):
        raise RoleRequired(SUPERUSER_WITHOUT_ROLE)


@contextmanager
def maker_serialised(user: Any) -> Iterator[None]:
    """One decision at a time per maker: the totals read by ``approval_required`` include the
    maker's movement decided just before. A partner's movements need no totals."""
    if not acts_for_bank(user):
        yield
        return
    with named_lock(f"bankcore.approval.maker.{user.pk}") as taken:
        if not taken:
            raise LedgerBusy("Another movement of yours is being decided; nothing was done. Please retry.")
        yield
