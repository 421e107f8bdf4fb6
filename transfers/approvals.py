"""Four eyes: a movement made by bank staff waits for a supervisor other than its maker when it,
or what its maker has moved that business day, passes a limit (``transfers.approval_rules``).

``approval_request`` checks what can be checked before anyone approves (amount, accounts,
maximum) and stores the request PENDING, its amount held (``transfers.approval_holds``);
``approval_approve`` (a holder of ``transfers.approve_approval`` other than the maker) decides and
executes it through the normal services, with the *maker* as the transfer's creator and the
checker named in the audit trail; ``approval_reject`` closes it with a reason. Execution uses the
idempotency key ``approval:<id>`` in the maker's namespace, so running it twice (a retry after a
ledger outage) moves money once.

A partner of the API is not staff: it debits only the accounts linked to it, on its customers'
authority, within the engine's limits (staff cannot authenticate there: ``bankcore.api.authentication``).
The rule is the same whatever the door: the back office queues what needs approval
(``money_movement_submit``); a door without a queue refuses it (``money_movement_execute``:
``ApprovalRequired``). A superuser outside the roles is refused at both (``RoleRequired``).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.errors import AccountClosed, AccountFrozen, InternalAccount
from accounts.models import Account
from accounts.selectors import account_get
from accounts.services import cash_account_ensure
from bankcore.actors import Actor
from bankcore.errors import ApplicationError, ServiceUnavailable, ValidationFailed
from bankcore.idempotency import idempotency_key_clean
from bankcore.money import money_parse
from transfers import group_commit
from transfers.approval_holds import approval_close, approval_hold, approval_hold_abort, approval_hold_release
from transfers.approval_records import (
    approval_event_record,
    approval_get,
    approval_lock,
    checker_check,
    decision_check,
    refusals_recorded,
)
from transfers.approval_rules import MOVEMENT_PERMISSIONS, approval_required, maker_serialised, role_check
from transfers.errors import (
    NOT_AN_OUTCOME,
    AmountAboveMaximum,
    ApprovalDecidedElsewhere,
    ApprovalExpired,
    ApprovalMakerRequired,
    ApprovalNotApproved,
    ApprovalNotMaker,
    ApprovalNotPending,
    ApprovalReasonRequired,
    ApprovalRejected,
    ApprovalRequired,
    ApprovalWithdrawn,
    CurrencyMismatch,
    IdempotencyKeyReused,
    SameAccount,
)
from transfers.models import Approval, Transfer
from transfers.services import (
    reference_clean,
    text_is_visible,
    transfer_cash_movement,
    transfer_create,
    transfer_held_execute,
    transfer_hold,
)

Status = Approval.Status
Kind = Approval.Kind


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
            approval_event_record(
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


def _not_a_batch(approval: Approval) -> None:
    """A batch's lines are approved and executed by ``transfers.bulk``, not as one movement."""
    if approval.kind == Kind.BATCH:
        raise ApprovalDecidedElsewhere("Bulk transfers are approved on their own page, where their lines are shown.")


@refusals_recorded("approve")
def approval_approve(*, actor: Actor, approval_id: object) -> Approval:
    """PENDING → APPROVED by a checker (not the maker, holding ``approve_approval``), then execute
    it (see ``approval_execute``). Raises ``ApprovalNotFound``, ``ApprovalNotPending``,
    ``ApprovalSelfApproval``, ``ApprovalNotAllowed`` changing nothing; after approving, whatever
    the execution raises (the approval is then FAILED, or still APPROVED when a ledger was down)."""
    with transaction.atomic(using="default"):
        approval = approval_lock(approval_id)
        decision_check(actor, approval, verb="approve")
        _not_a_batch(approval)
        now = timezone.now()
        hold = approval_hold(approval)
        expired = hold is not None and (hold.status != Transfer.Status.PENDING or hold.deadline <= now)
        if expired:
            approval_close(
                approval, actor, Status.EXPIRED, ApprovalExpired("The request expired before it was approved.")
            )
    if expired:
        approval_hold_release(approval)
        raise ApprovalExpired("This request expired before it was approved; its amount is no longer held.")
    with transaction.atomic(using="default"):
        approval = approval_lock(approval_id)
        decision_check(actor, approval, verb="approve")
        now = timezone.now()
        Approval.objects.filter(pk=approval.pk, status=Status.PENDING).update(
            status=Status.APPROVED, checker_id=actor.user_id, decided_at=now
        )
        approval.status, approval.checker_id, approval.decided_at = Status.APPROVED, actor.user_id, now
        approval_event_record(approval, actor, "approval.approved", checker=actor.user_id)
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


@refusals_recorded("reject")
def approval_reject(*, actor: Actor, approval_id: object, reason: str) -> Approval:
    """PENDING → REJECTED with a reason; nothing moves. Same refusals as ``approval_approve``, and
    ``ApprovalReasonRequired``."""
    reason = approval_reason_clean(reason)
    with transaction.atomic(using="default"):
        approval = approval_lock(approval_id)
        decision_check(actor, approval, verb="reject")
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
        approval_event_record(approval, actor, "approval.rejected", checker=actor.user_id, reason=reason)
        approval_hold_abort(approval, actor, ApprovalRejected(f"Rejected by a supervisor: {reason}"))
    approval_hold_release(approval)
    return approval


@refusals_recorded("withdraw")
def approval_withdraw(*, actor: Actor, approval_id: object) -> Approval:
    """PENDING → WITHDRAWN by its maker, who no longer wants it; nothing moves and the amount held
    is released. Raises ``ApprovalNotFound``, ``ApprovalNotPending``, ``ApprovalNotMaker`` (only the
    maker may), changing nothing."""
    with transaction.atomic(using="default"):
        approval = approval_lock(approval_id)
        if actor.user_id is None or actor.user_id != approval.maker_id:
            raise ApprovalNotMaker("Only the teller who made this request can withdraw it.")
        if approval.status != Status.PENDING:
            raise ApprovalNotPending(f"This request is already {approval.get_status_display().lower()}.")
        approval_close(approval, actor, Status.WITHDRAWN, ApprovalWithdrawn("Withdrawn by its maker."))
    approval_hold_release(approval)
    return approval


@refusals_recorded("execute")
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
    checker_check(actor, approval, verb="execute")
    _not_a_batch(approval)
    maker = Actor(
        channel=actor.channel,
        user_id=approval.maker_id,
        username=approval.maker.get_username(),
        ip=actor.ip,
        request_id=actor.request_id,
    )
    key = f"approval:{approval.pk}"
    hold = approval_hold(approval)
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
                approval_event_record(
                    approval, actor, "approval.failed", checker=actor.user_id, failure_code=error.code
                )
        raise
    with transaction.atomic(using="default"):
        executed = Approval.objects.filter(pk=approval.pk, status=Status.APPROVED).update(
            status=Status.EXECUTED, transfer=transfer, executed_at=timezone.now()
        )
        if executed:
            approval_event_record(
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
    every door's entry asks first, holding the maker's lock (``maker_serialised``). A request
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
    with maker_serialised(user):
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
    with maker_serialised(user):
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
