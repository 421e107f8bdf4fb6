"""Four eyes: a movement made by bank staff waits for a supervisor other than its maker when it,
or what its maker has moved that business day, passes a limit.

``approval_request`` checks what can be checked before anyone approves (amount, accounts,
maximum) and stores the request PENDING; ``approval_approve`` (a holder of
``transfers.approve_approval`` other than the maker) decides and executes it through the normal
services, with the *maker* as the transfer's creator and the checker named in the audit trail;
``approval_reject`` closes it with a reason. Execution uses the idempotency key ``approval:<id>``
in the maker's namespace, so running it twice (a retry after a ledger outage) moves money once.

Who waits, and when (``approval_required``): staff (``audit.roles.acts_for_bank``) whose movement
would take past its limit either the maker's total on one account in the business day
(Asia/Shanghai; the account debited, or credited by a deposit) or the maker's total of the day
over all accounts. Totals count the maker's movements of the day that were not aborted and every
request of theirs still waiting (pending or approved), so two slips of 9,000 from one account
wait as one of 18,000 would. The per-account limit is ``APPROVAL_THRESHOLD`` for a teller and
``SOLO_LIMIT`` for a supervisor (whose request another supervisor decides); the daily one is
``APPROVAL_MAKER_DAILY_THRESHOLD`` for both. One maker's decisions are serialised (``named_lock``),
so two submissions at once cannot both read the total from before the other.

A partner of the API is not staff: it debits only the accounts linked to it, on its customers'
authority, within the engine's limits (staff cannot authenticate there: ``bankcore.api.authentication``).
The rule is the same whatever the door: the back office queues what needs approval
(``money_movement_submit``); a door without a queue refuses it (``money_movement_execute``:
``ApprovalRequired``). A superuser outside the roles is refused at both (``RoleRequired``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, models, transaction
from django.db.models import DecimalField, Q, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.errors import AccountClosed, AccountFrozen, InternalAccount
from accounts.models import Account
from accounts.numbers import InvalidAccountNumber, account_number_parse
from accounts.selectors import account_get
from accounts.services import cash_account_ensure
from audit.roles import SUPERUSER_WITHOUT_ROLE, acts_for_bank, role_permits
from audit.services import audit_event_record, audit_refusal_record
from bankcore.actors import Actor
from bankcore.db import named_lock
from bankcore.errors import ApplicationError, Conflict, NotFound, ServiceUnavailable, ValidationFailed
from bankcore.idempotency import idempotency_key_clean
from bankcore.money import money_parse
from transfers import group_commit
from transfers.errors import (
    NOT_AN_OUTCOME,
    AmountAboveMaximum,
    ApprovalRequired,
    CurrencyMismatch,
    IdempotencyKeyReused,
    LedgerBusy,
    RoleRequired,
    SameAccount,
)
from transfers.models import Approval, Transfer
from transfers.services import (
    business_date_today,
    reference_clean,
    text_is_visible,
    transfer_cash_movement,
    transfer_create,
    transfer_held_execute,
    transfer_hold,
    transfer_hold_abort,
    transfer_hold_release,
)

APPROVE_PERMISSION = "transfers.approve_approval"
Status = Approval.Status
Kind = Approval.Kind


class ApprovalNotFound(NotFound):
    code = "approval_not_found"
    title = "Approval not found"


class ApprovalNotPending(Conflict):
    code = "approval_not_pending"
    title = "Approval already decided"


class ApprovalNotApproved(Conflict):
    code = "approval_not_approved"
    title = "Approval is not approved"


class ApprovalSelfApproval(ApplicationError):
    code = "approval_self_approval"
    title = "The maker cannot decide their own request"
    http_status = 403


class ApprovalNotAllowed(ApplicationError):
    code = "approval_not_allowed"
    title = "Not allowed to approve"
    http_status = 403


class ApprovalReasonRequired(ValidationFailed):
    code = "approval_reason_required"
    title = "A reason is required"


class ApprovalMakerRequired(ValidationFailed):
    code = "approval_maker_required"
    title = "Only a signed-in user can ask for approval"


class ApprovalNotMaker(ApplicationError):
    code = "approval_not_maker"
    title = "Only the maker can withdraw a request"
    http_status = 403


class ApprovalExpired(Conflict):
    code = "approval_expired"
    title = "The request expired"


class ApprovalDecidedElsewhere(Conflict):
    code = "approval_decided_elsewhere"
    title = "This request is approved on its own page"


# Why a held amount was released: the reason its hold transfer was aborted with.
class ApprovalRejected(Conflict):
    code = "approval_rejected"
    title = "The request was rejected"


class ApprovalWithdrawn(Conflict):
    code = "approval_withdrawn"
    title = "The request was withdrawn by its maker"


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


def _event(approval: Approval, actor: Actor, action: str, **extra: object) -> None:
    audit_event_record(
        actor=actor,
        action=action,
        object_type="approval",
        object_id=str(approval.pk),
        changes={
            "kind": approval.kind,
            "source": approval.source_account,
            "destination": approval.destination_account,
            "amount": str(approval.amount),
            "currency": approval.currency,
            "reference": approval.reference,
            "maker": approval.maker_id,
            **extra,
        },
    )


def approval_request(
    *,
    actor: Actor,
    kind: str,
    amount: Decimal | str,
    source_account: str = "",
    destination_account: str = "",
    reference: str = "",
    idempotency_key: str | None = None,
    why: str = "",
) -> Approval:
    """Store a movement PENDING approval (``why``: the rule that made it wait, for the audit trail), its amount held on the account it leaves
    (``transfers.services.transfer_hold``: the debit leg prepared, the amount in pending debits)
    until a supervisor decides, its maker withdraws it, or ``APPROVAL_HOLD_SECONDS`` pass. A
    transfer names both accounts, a deposit the destination, a withdrawal the source. With
    ``idempotency_key``, the same maker submitting the same request again gets the first request
    back (never a second one to approve). Checks at submit what will be checked when it executes,
    so that no supervisor is asked to approve what must fail. Raises, storing nothing:
    ``InvalidAmount``, ``InvalidAccountNumber``, ``AccountNotFound``, ``SameAccount``,
    ``InternalAccount`` (a transfer naming a ledger's cash account), ``AmountAboveMaximum``,
    ``AccountFrozen``, ``AccountClosed``, ``CurrencyMismatch`` (the account credited),
    ``InvalidReference``, ``InvalidIdempotencyKey``, ``IdempotencyKeyReused`` (same key, different
    request), ``ApprovalMakerRequired``; and, recorded on the aborted hold, the source's refusals
    (funds, daily limit, state)."""
    if actor.user_id is None:
        raise ApprovalMakerRequired()
    if kind not in Kind.values:
        raise ValidationFailed(f"Unknown kind {kind!r}.")
    value = money_parse(amount)
    reference = reference_clean(reference)
    key = idempotency_key_clean(idempotency_key)
    if key is not None:
        earlier = _approval_replay(maker_id=actor.user_id, key=key)
        if earlier is not None:
            return _approval_same_request(earlier, kind, value, source_account, destination_account, reference)
    if kind in (Kind.TRANSFER, Kind.WITHDRAWAL):
        source = account_get(number=source_account)
        currency = source.currency
    if kind in (Kind.TRANSFER, Kind.DEPOSIT):
        destination = account_get(number=destination_account)
        currency = destination.currency if kind == Kind.DEPOSIT else currency
    if kind == Kind.TRANSFER and source.number == destination.number:
        raise SameAccount("The source and destination accounts are the same.")
    if kind == Kind.TRANSFER and any(a.kind != Account.Kind.CUSTOMER for a in (source, destination)):
        # The engine's rule (_check_account), checked at submit since an account's kind never
        # changes: no supervisor is asked to approve what the engine would refuse.
        raise InternalAccount("A ledger's internal account moves only by cash deposits and withdrawals.")
    if value > settings.MAX_TRANSFER_AMOUNT:
        raise AmountAboveMaximum(f"At most {settings.MAX_TRANSFER_AMOUNT} can be moved at once.")
    if kind in (Kind.TRANSFER, Kind.DEPOSIT):
        # The account credited is checked again when the request executes; the hold checks the other.
        _credit_check(destination, currency)
    held = source if kind != Kind.DEPOSIT else cash_account_ensure(ledger=destination.ledger, currency=currency)
    credited = destination if kind != Kind.WITHDRAWAL else cash_account_ensure(ledger=source.ledger, currency=currency)
    hold = transfer_hold(
        actor=actor,
        kind=kind,
        source_account=str(held.number),
        destination_account=str(credited.number),
        amount=value,
        currency=currency,
        reference=reference,
        idempotency_key=_hold_key(key),
        until=timezone.now() + timedelta(seconds=settings.APPROVAL_HOLD_SECONDS),
    )
    try:
        with transaction.atomic(using="default"):
            approval = Approval.objects.create(
                kind=kind,
                source_account=str(source.number) if kind != Kind.DEPOSIT else "",
                destination_account=str(destination.number) if kind != Kind.WITHDRAWAL else "",
                amount=value,
                currency=currency,
                reference=reference,
                maker_id=actor.user_id,
                maker_channel=actor.channel,
                idempotency_key=key,
                transfer=hold,
            )
            _event(
                approval,
                actor,
                "approval.requested",
                why=why,
                held_until=hold.deadline.isoformat(),
            )
    except IntegrityError:
        # The same key submitted twice at once: the other submission stored it first (with the
        # same hold, which the key made one).
        earlier = _approval_replay(maker_id=actor.user_id, key=key) if key is not None else None
        if earlier is None:
            raise
        return _approval_same_request(earlier, kind, value, source_account, destination_account, reference)
    return approval


def _hold_key(key: str | None) -> str | None:
    """The hold's idempotency key, from the request's: one request, one hold."""
    return None if key is None else "hold:" + hashlib.sha256(key.encode()).hexdigest()[:40]


def _credit_check(account: Account, currency: str) -> None:
    """What the engine checks of the account credited (``_check_account``), at submit."""
    if account.status == Account.Status.FROZEN:
        raise AccountFrozen(f"The destination account {account.number} is frozen.")
    if account.status == Account.Status.CLOSED:
        raise AccountClosed(f"The destination account {account.number} is closed.")
    if account.currency != currency:
        raise CurrencyMismatch(f"The destination account {account.number} holds {account.currency}, not {currency}.")


def _approval_replay(*, maker_id: int, key: str) -> Approval | None:
    return Approval.objects.filter(maker_id=maker_id, idempotency_key=key).first()


def _approval_same_request(
    earlier: Approval, kind: str, amount: Decimal, source: str, destination: str, reference: str
) -> Approval:
    asked = (kind, amount, source.replace(" ", ""), destination.replace(" ", ""), reference)
    stored = (earlier.kind, earlier.amount, earlier.source_account, earlier.destination_account, earlier.reference)
    if asked != stored:
        raise IdempotencyKeyReused("This idempotency key was used for a different request.")
    return earlier


def _approval_pk(approval_id: object) -> int:
    try:
        return int(str(approval_id))
    except ValueError:
        raise ApprovalNotFound(f"No approval {approval_id}.") from None


def approval_get(*, approval_id: object) -> Approval:
    """The request ``approval_id`` names, with its maker; ``ApprovalNotFound`` when it names none."""
    approval = Approval.objects.filter(pk=_approval_pk(approval_id)).select_related("maker").first()
    if approval is None:
        raise ApprovalNotFound(f"No approval {approval_id}.")
    return approval


def _approval_lock(approval_id: object) -> Approval:
    approval = Approval.objects.select_for_update().filter(pk=_approval_pk(approval_id)).first()
    if approval is None:
        raise ApprovalNotFound(f"No approval {approval_id}.")
    return approval


def _not_a_batch(approval: Approval) -> None:
    """A batch's lines are approved and executed by ``transfers.bulk``, not as one movement."""
    if approval.kind == Kind.BATCH:
        raise ApprovalDecidedElsewhere("Bulk transfers are approved on their own page, where their lines are shown.")


def _check_checker(actor: Actor, approval: Approval, *, verb: str) -> None:
    if approval.status != Status.PENDING:
        raise ApprovalNotPending(f"This request is already {approval.get_status_display().lower()}.")
    _check_not_maker_and_supervisor(actor, approval, verb=verb)


def _check_not_maker_and_supervisor(actor: Actor, approval: Approval, *, verb: str) -> None:
    if actor.user_id is not None and actor.user_id == approval.maker_id:
        raise ApprovalSelfApproval(f"You made this request; another supervisor must {verb} it.")
    checker = get_user_model().objects.filter(pk=actor.user_id, is_active=True).first() if actor.user_id else None
    if checker is None or not is_checker(checker):
        raise ApprovalNotAllowed(f"Only a supervisor may {verb} requests.")


# The refusals that say who may decide: each is an audit event of its own (who tried, what, why).
STAFF_REFUSALS = (ApprovalSelfApproval, ApprovalNotAllowed, ApprovalNotMaker)
F = TypeVar("F", bound=Callable[..., Any])


def _refusals_recorded(verb: str) -> Callable[[F], F]:
    """A decision service whose staff refusals (``STAFF_REFUSALS``) are recorded in the audit
    trail, after its transaction rolled back (``audit_refusal_record``), once: approving runs the
    execution's check too."""

    def wrap(service: F) -> F:
        @functools.wraps(service)
        def recorded(*, actor: Actor, approval_id: object, **kwargs: Any) -> Any:
            try:
                return service(actor=actor, approval_id=approval_id, **kwargs)
            except STAFF_REFUSALS as refused:
                if not getattr(refused, "recorded", False):
                    setattr(refused, "recorded", True)  # noqa: B010 (an attribute of this instance only)
                    audit_refusal_record(
                        actor=actor,
                        action=f"approval.{verb}",
                        object_type="approval",
                        object_id=str(approval_id)[:64],
                        code=refused.code,
                    )
                raise

        return recorded  # type: ignore[return-value]

    return wrap


@_refusals_recorded("approve")
def approval_approve(*, actor: Actor, approval_id: object) -> Approval:
    """PENDING → APPROVED by a checker (not the maker, holding ``approve_approval``), then execute
    it (see ``approval_execute``). Raises ``ApprovalNotFound``, ``ApprovalNotPending``,
    ``ApprovalSelfApproval``, ``ApprovalNotAllowed`` changing nothing; after approving, whatever
    the execution raises (the approval is then FAILED, or still APPROVED when a ledger was down)."""
    with transaction.atomic(using="default"):
        approval = _approval_lock(approval_id)
        _check_checker(actor, approval, verb="approve")
        _not_a_batch(approval)
        now = timezone.now()
        hold = _hold_of(approval)
        expired = hold is not None and (hold.status != Transfer.Status.PENDING or hold.deadline <= now)
        if expired:
            _close(approval, actor, Status.EXPIRED, ApprovalExpired("The request expired before it was approved."))
    if expired:
        _release(approval)
        raise ApprovalExpired("This request expired before it was approved; its amount is no longer held.")
    with transaction.atomic(using="default"):
        approval = _approval_lock(approval_id)
        _check_checker(actor, approval, verb="approve")
        now = timezone.now()
        Approval.objects.filter(pk=approval.pk, status=Status.PENDING).update(
            status=Status.APPROVED, checker_id=actor.user_id, decided_at=now
        )
        approval.status, approval.checker_id, approval.decided_at = Status.APPROVED, actor.user_id, now
        _event(approval, actor, "approval.approved", checker=actor.user_id)
    return approval_execute(actor=actor, approval_id=approval.pk)


def approval_reason_clean(reason: object) -> str:
    """A rejection's reason as it is kept (its spaces folded); ``ApprovalReasonRequired`` for none,
    one too long, or one nobody can read."""
    text = " ".join(str(reason or "").split())
    if not text:
        raise ApprovalReasonRequired("Say why the request is rejected.")
    if len(text) > 500:
        raise ApprovalReasonRequired("A reason has at most 500 characters.")
    if not text_is_visible(text):  # a NUL, a bidi override, a zero-width space: a reason nobody reads
        raise ApprovalReasonRequired("A reason is plain text, without invisible or control characters.")
    return text


@_refusals_recorded("reject")
def approval_reject(*, actor: Actor, approval_id: object, reason: str) -> Approval:
    """PENDING → REJECTED with a reason; nothing moves. Same refusals as ``approval_approve``, and
    ``ApprovalReasonRequired``."""
    reason = approval_reason_clean(reason)
    with transaction.atomic(using="default"):
        approval = _approval_lock(approval_id)
        _check_checker(actor, approval, verb="reject")
        now = timezone.now()
        Approval.objects.filter(pk=approval.pk, status=Status.PENDING).update(
            status=Status.REJECTED, checker_id=actor.user_id, decided_at=now, reason=reason
        )
        approval.status, approval.checker_id, approval.decided_at, approval.reason = (
            Status.REJECTED,
            actor.user_id,
            now,
            reason,
        )
        _event(approval, actor, "approval.rejected", checker=actor.user_id, reason=reason)
        _hold_abort(approval, actor, ApprovalRejected(f"Rejected by a supervisor: {reason}"))
    _release(approval)
    return approval


@_refusals_recorded("withdraw")
def approval_withdraw(*, actor: Actor, approval_id: object) -> Approval:
    """PENDING → WITHDRAWN by its maker, who no longer wants it; nothing moves and the amount held
    is released. Raises ``ApprovalNotFound``, ``ApprovalNotPending``, ``ApprovalNotMaker`` (only the
    maker may), changing nothing."""
    with transaction.atomic(using="default"):
        approval = _approval_lock(approval_id)
        if actor.user_id is None or actor.user_id != approval.maker_id:
            raise ApprovalNotMaker("Only the teller who made this request can withdraw it.")
        if approval.status != Status.PENDING:
            raise ApprovalNotPending(f"This request is already {approval.get_status_display().lower()}.")
        _close(approval, actor, Status.WITHDRAWN, ApprovalWithdrawn("Withdrawn by its maker."))
    _release(approval)
    return approval


def approvals_expire(*, actor: Actor, now: datetime | None = None) -> int:
    """PENDING requests whose hold has ended (recovery aborted it past its deadline) or is past
    its deadline → EXPIRED, their amount released; a batch (which holds nothing) once
    ``APPROVAL_HOLD_SECONDS`` old. Run with recovery; returns how many."""
    now = now or timezone.now()
    held = Q(transfer__isnull=False) & (Q(transfer__status=Transfer.Status.ABORTED) | Q(transfer__deadline__lte=now))
    old_batch = Q(kind=Kind.BATCH, created_at__lte=now - timedelta(seconds=settings.APPROVAL_HOLD_SECONDS))
    due = Approval.objects.filter(status=Status.PENDING).filter(held | old_batch)
    count = 0
    for pk in list(due.values_list("pk", flat=True)[:500]):
        with transaction.atomic(using="default"):
            approval = _approval_lock(pk)
            if approval.status != Status.PENDING:
                continue
            _close(approval, actor, Status.EXPIRED, ApprovalExpired("Not decided before its hold ended."))
        _release(approval)
        count += 1
    return count


def holds_orphaned_release(*, actor: Actor, now: datetime | None = None) -> int:
    """Holds no request refers to (the process stopped between holding the amount and storing
    the request, and the form was not sent again): aborted and released once older than
    ``TRANSACTION_TIMEOUT``, rather than holding the money until their deadline. A hold is a
    PENDING transfer whose deadline lies beyond a transfer's timeout. Run with recovery; returns
    how many."""
    now = now or timezone.now()
    timeout = timedelta(seconds=settings.TRANSACTION_TIMEOUT)
    orphans = (
        Transfer.objects.filter(status=Transfer.Status.PENDING, created_at__lt=now - timeout)
        .filter(deadline__gt=models.F("created_at") + timeout)
        .exclude(pk__in=Approval.objects.filter(transfer__isnull=False).values("transfer_id"))
    )
    count = 0
    for hold in list(orphans[:500]):
        if transfer_hold_abort(actor=actor, transfer=hold, error=ApprovalExpired("No request holds this amount.")):
            transfer_hold_release(transfer=hold)
            count += 1
    return count


def _hold_of(approval: Approval) -> Transfer | None:
    """The transfer holding a PENDING or APPROVED request's amount (None: a request stored before
    amounts were held, which executes as a new transfer)."""
    if approval.transfer_id is None or approval.status not in (Status.PENDING, Status.APPROVED):
        return None
    return Transfer.objects.get(pk=approval.transfer_id)


def _hold_abort(approval: Approval, actor: Actor, error: ApplicationError) -> None:
    """Inside the transaction that closes the request: its hold decided ABORTED with it."""
    if approval.transfer_id is not None:
        hold = Transfer.objects.get(pk=approval.transfer_id)
        if hold.status == Transfer.Status.PENDING:
            transfer_hold_abort(actor=actor, transfer=hold, error=error)


def _close(approval: Approval, actor: Actor, status: str, error: ApplicationError) -> None:
    """PENDING → ``status`` (withdrawn, expired), with its event and its hold aborted."""
    now = timezone.now()
    Approval.objects.filter(pk=approval.pk, status=Status.PENDING).update(
        status=status, decided_at=now, reason=error.detail[:500]
    )
    approval.status, approval.decided_at, approval.reason = status, now, error.detail[:500]
    _event(approval, actor, f"approval.{status}")
    _hold_abort(approval, actor, error)


def _release(approval: Approval) -> None:
    """After the commit that aborted a request's hold: release the amount (recovery does it if
    this cannot)."""
    if approval.transfer_id is not None:
        hold = Transfer.objects.get(pk=approval.transfer_id)
        if hold.status == Transfer.Status.ABORTED:
            transfer_hold_release(transfer=hold)


@_refusals_recorded("execute")
def approval_execute(*, actor: Actor, approval_id: object) -> Approval:
    """Run an APPROVED request through the transfer engine, as its maker, exactly once. On success
    → EXECUTED with the transfer (which recovery finishes if a ledger failed mid-way). On a refusal
    (funds, limits, account state) → FAILED with the reason, and the refusal is raised. When a
    database did not answer (or the transfer missed its deadline because of it,
    ``NOT_AN_OUTCOME``) it stays APPROVED and the error is raised: run this again later (a
    supervisor other than the maker: ``ApprovalSelfApproval``, ``ApprovalNotAllowed`` otherwise)."""
    approval = approval_get(approval_id=approval_id)
    if approval.status != Status.APPROVED:
        raise ApprovalNotApproved(f"This request is {approval.get_status_display().lower()}, not approved.")
    _check_not_maker_and_supervisor(actor, approval, verb="execute")
    _not_a_batch(approval)
    maker = Actor(
        channel=actor.channel,
        user_id=approval.maker_id,
        username=approval.maker.get_username(),
        ip=actor.ip,
        request_id=actor.request_id,
    )
    key = f"approval:{approval.pk}"
    hold = _hold_of(approval)
    try:
        transfer = _execute(approval, maker, key) if hold is None else transfer_held_execute(actor=maker, transfer=hold)
    except ServiceUnavailable:
        raise
    except ApplicationError as error:
        if error.code in NOT_AN_OUTCOME and (hold is None or hold.status != Transfer.Status.ABORTED):
            raise  # nothing was moved for a reason of the moment: it stays APPROVED, to run again
        refused = error.transfer if isinstance(error.transfer, Transfer) else hold
        with transaction.atomic(using="default"):
            failed = Approval.objects.filter(pk=approval.pk, status=Status.APPROVED).update(
                status=Status.FAILED,
                failure_code=error.code,
                failure_detail=error.detail[:500],
                transfer=refused,
                executed_at=timezone.now(),
            )
            if failed:
                _event(approval, actor, "approval.failed", checker=actor.user_id, failure_code=error.code)
        raise
    with transaction.atomic(using="default"):
        executed = Approval.objects.filter(pk=approval.pk, status=Status.APPROVED).update(
            status=Status.EXECUTED, transfer=transfer, executed_at=timezone.now()
        )
        if executed:
            _event(
                approval,
                actor,
                "approval.executed",
                checker=actor.user_id,
                transfer_id=str(transfer.id),
                transfer_status=transfer.status,
            )
    approval.refresh_from_db()
    return approval


def _execute(approval: Approval, maker: Actor, key: str) -> Transfer:
    return _movement_execute(
        actor=maker,
        kind=approval.kind,
        amount=approval.amount,
        source_account=approval.source_account,
        destination_account=approval.destination_account,
        reference=approval.reference,
        idempotency_key=key,
        currency=approval.currency,
    )


def _movement_execute(
    *,
    actor: Actor,
    kind: str,
    amount: Decimal,
    source_account: str,
    destination_account: str,
    reference: str,
    idempotency_key: str | None,
    currency: str | None = None,
    grouped: bool = False,
) -> Transfer:
    """``grouped``: a door's transfer, which may share a batch with others (``transfers.group_commit``)."""
    if kind == Kind.DEPOSIT:
        return transfer_cash_movement(
            actor=actor,
            kind=Transfer.Kind.DEPOSIT,
            number=destination_account,
            amount=amount,
            reference=reference,
            idempotency_key=idempotency_key,
        )
    if kind == Kind.WITHDRAWAL:
        return transfer_cash_movement(
            actor=actor,
            kind=Transfer.Kind.WITHDRAWAL,
            number=source_account,
            amount=amount,
            reference=reference,
            idempotency_key=idempotency_key,
        )
    return (group_commit.transfer_create if grouped else transfer_create)(
        actor=actor,
        source_account=source_account,
        destination_account=destination_account,
        amount=amount,
        currency=currency,
        reference=reference,
        idempotency_key=idempotency_key,
    )


def _movement_account(kind: str, source_account: str, destination_account: str) -> str:
    return destination_account if kind == Kind.DEPOSIT else source_account


@contextmanager
def _maker_serialised(user: Any) -> Iterator[None]:
    """One decision at a time per maker: the totals read by ``approval_required`` include the
    maker's movement decided just before. A partner's movements need no totals."""
    if not acts_for_bank(user):
        yield
        return
    with named_lock(f"bankcore.approval.maker.{user.pk}") as taken:
        if not taken:
            raise LedgerBusy("Another movement of yours is being decided; nothing was done. Please retry.")
        yield


def _movement_gate(
    *,
    actor: Actor,
    user: Any,
    kind: str,
    amount: Decimal | str,
    source_account: str,
    destination_account: str,
    idempotency_key: str | None,
) -> tuple[Decimal, str | None]:
    """The amount, and why the movement waits for approval (None: it executes at once); what
    every door's entry asks first, holding the maker's lock (``_maker_serialised``). A request
    sent again under its idempotency key takes the way it took the first time, whatever the
    totals say now (they include it): its replay, never a second movement."""
    if kind not in MOVEMENT_PERMISSIONS:
        raise ValidationFailed(f"Unknown kind {kind!r}.")
    role_check(user=user, permission=MOVEMENT_PERMISSIONS[kind])
    value = money_parse(amount)
    key = idempotency_key_clean(idempotency_key)
    if key is not None and actor.user_id is not None:
        if _approval_replay(maker_id=actor.user_id, key=key) is not None:
            return value, "sent again: it waits as it did the first time"
        if Transfer.objects.filter(client_id=actor.client_id, idempotency_key=key).exists():
            return value, None
    account = _movement_account(kind, source_account, destination_account)
    return value, approval_required(user=user, amount=value, kind=kind, account=account)


def money_movement_submit(
    *,
    actor: Actor,
    user: Any,
    kind: str,
    amount: Decimal | str,
    source_account: str = "",
    destination_account: str = "",
    reference: str = "",
    idempotency_key: str | None = None,
) -> Transfer | Approval:
    """The doors' entry for a movement that may need four eyes: executes it at once (returning
    the ``Transfer``) or, when ``approval_required`` says why it must wait, stores it PENDING
    (returning the ``Approval``, whose ``why`` attribute says why). ``idempotency_key`` makes
    either safe to submit twice. Raises what the chosen service raises, ``RoleRequired`` (see
    ``role_check``) and ``LedgerBusy`` (the maker's other movement held the lock too long)."""
    with _maker_serialised(user):
        value, why = _movement_gate(
            actor=actor,
            user=user,
            kind=kind,
            amount=amount,
            source_account=source_account,
            destination_account=destination_account,
            idempotency_key=idempotency_key,
        )
        if why is not None:
            approval = approval_request(
                actor=actor,
                kind=kind,
                amount=value,
                source_account=source_account,
                destination_account=destination_account,
                reference=reference,
                idempotency_key=idempotency_key,
                why=why,
            )
            approval.why = why
            return approval
        return _movement_execute(
            actor=actor,
            kind=kind,
            amount=value,
            source_account=source_account,
            destination_account=destination_account,
            reference=reference,
            idempotency_key=idempotency_key,
            grouped=True,
        )


def money_movement_execute(
    *,
    actor: Actor,
    user: Any,
    kind: str,
    amount: Decimal | str,
    source_account: str = "",
    destination_account: str = "",
    currency: str | None = None,
    reference: str = "",
    idempotency_key: str | None = None,
) -> Transfer:
    """The entry of a door without an approval queue: executes the movement at once, or refuses
    what would need four eyes with ``ApprovalRequired`` — nothing moved, nothing stored; the maker
    submits it in the back office, where it waits for a supervisor. Raises ``RoleRequired`` (see
    ``role_check``), ``LedgerBusy`` and what the engine raises."""
    with _maker_serialised(user):
        value, why = _movement_gate(
            actor=actor,
            user=user,
            kind=kind,
            amount=amount,
            source_account=source_account,
            destination_account=destination_account,
            idempotency_key=idempotency_key,
        )
        if why is not None:
            raise ApprovalRequired(
                f"This movement needs a supervisor's approval ({why}), and this door executes at once: "
                "submit it in the back office, where it waits for one. Nothing was moved."
            )
        return _movement_execute(
            actor=actor,
            kind=kind,
            amount=value,
            source_account=source_account,
            destination_account=destination_account,
            reference=reference,
            idempotency_key=idempotency_key,
            currency=currency,
            grouped=True,
        )
