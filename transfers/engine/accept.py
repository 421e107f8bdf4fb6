"""Accepting a transfer: validate the request, claim its idempotency key (or replay what the key
already answered, or release a key an outage held), record the transfer PENDING, and carry it out
in its form: ``local`` (one ledger), ``cross`` (five commits) or ``home`` (three commits, accepted
with its home leg prepared). ``transfer_submit`` is what every public service of
``transfers.services`` calls; a refusal of the request itself raises before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import unicodedata
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, OperationalError
from django.utils import timezone

from accounts.numbers import account_number_parse
from accounts.selectors import account_get
from audit.services import auditlog_entry_created
from bankcore.actors import Actor
from bankcore.db import CommitOutcomeUnknown, atomic_with_retry
from bankcore.faults import fault_point
from bankcore.idempotency import idempotency_key_clean
from bankcore.metrics import record_transfer
from bankcore.money import currency_parse, money_parse
from transfers import ledger_sql
from transfers.engine.cross import cross_ledger_execute, debit_prepare
from transfers.engine.home import home_accept, home_execute, home_leg
from transfers.engine.legs import leg_void
from transfers.engine.local import local_execute
from transfers.engine.outcome import transfer_refusal_error
from transfers.errors import (
    NOT_AN_OUTCOME,
    AmountAboveMaximum,
    IdempotencyKeyReused,
    InvalidReference,
    LedgerBusy,
    LedgerUnavailable,
    SameAccount,
    TransferAlreadyReversed,
    TransferNotFound,
    TransferNotReversible,
)
from transfers.models import Transfer, TransferLeg

logger = logging.getLogger(__name__)

Leg = TransferLeg.Leg
Status = Transfer.Status

REFERENCE_MAX_LENGTH = 140


def business_date_today() -> date:
    """The bank's business date: today in ``BUSINESS_TIME_ZONE``, the day daily limits count."""
    return timezone.localdate(timezone=ZoneInfo(settings.BUSINESS_TIME_ZONE))


def text_is_visible(text: str) -> bool:
    """Printable, or a space of any width (a Chinese input method types U+3000): nothing invisible
    that would change how a line of it reads (bidi overrides, zero-width characters, controls).
    The rule of a transfer's reference and of a reason a supervisor gives."""
    return all(ch.isprintable() or unicodedata.category(ch) == "Zs" for ch in text)


def reference_clean(reference: object) -> str:
    """A transfer's reference as given, or "" for None; raises ``InvalidReference``."""
    if reference is None:
        return ""
    if not isinstance(reference, str):
        raise InvalidReference("The reference must be text.")
    if len(reference) > REFERENCE_MAX_LENGTH:
        raise InvalidReference(f"The reference has at most {REFERENCE_MAX_LENGTH} characters.")
    if not text_is_visible(reference):
        raise InvalidReference("The reference contains invisible or control characters.")
    return reference


def request_hash_of(**fields: object) -> str:
    canonical = json.dumps({k: str(v) if v is not None else None for k, v in fields.items()}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def transfer_replay(existing: Transfer, request_hash: str) -> Transfer:
    if existing.request_hash != request_hash:
        raise IdempotencyKeyReused(
            "This idempotency key was already used for a different request.",
            extra={"transfer_id": str(existing.id)},
        )
    existing.replayed = True
    error = transfer_refusal_error(existing)
    if error is not None:
        error.replayed = True
        raise error
    return existing


def transfer_key_release(existing: Transfer, request_hash: str) -> bool:
    """An outage is not an outcome: when the transfer holding a key was aborted for a reason of the
    moment (``NOT_AN_OUTCOME``: a server down, a lock given up on, its deadline missed), nothing was
    moved, and the same request retried under the key is carried out as a new transfer. The
    aborted one gives the key up (a conditional update: of two retries racing, one insert takes the
    key, the other replays it). False — replay it — for anything else: a refusal, a transfer that
    moved money or may still, another request's key. Raises ``OperationalError`` when a ledger
    the aborted transfer's legs live in does not answer (the retry is then refused as unavailable,
    to be retried again)."""
    if (
        existing.request_hash != request_hash
        or existing.status != Status.ABORTED
        or existing.failure_code not in NOT_AN_OUTCOME
    ):
        return False
    if existing.is_cross_ledger:
        # What the aborted transfer may still hold (a void its coordinator could not finish, left
        # to recovery) is released first: the retry must find the account as if it was never
        # tried, not refuse it for funds the first attempt holds. Raises while a ledger is down.
        for leg in (Leg.DEBIT, Leg.CREDIT):
            leg_void(existing, leg)
    released = Transfer.objects.filter(
        pk=existing.pk, status=Status.ABORTED, idempotency_key=existing.idempotency_key
    ).update(idempotency_key=None)
    if released:
        logger.info("transfer %s (%s): idempotency key released for a retry", existing.id, existing.failure_code)
    return True


def transfer_submit(
    *,
    actor: Actor,
    kind: str,
    source: str,
    destination: str,
    amount: Decimal | str,
    currency: str | None,
    reference: str,
    idempotency_key: str | None,
    reversal_of: Transfer | None = None,
    hold_until: datetime | None = None,
) -> Transfer:
    """Validate, accept and carry out one movement (``transfers.services`` documents what each kind
    returns and raises). ``reversal_of``: the transfer it reverses; ``hold_until``: accept it with
    the debit leg prepared, held until then (``transfers.services.transfer_hold``)."""
    amount = money_parse(amount)
    if currency is not None:
        currency = currency_parse(currency)
    reference = reference_clean(reference)
    key = idempotency_key_clean(idempotency_key)
    src = account_number_parse(source)
    dst = account_number_parse(destination)
    if src.number == dst.number:
        raise SameAccount("The source and destination accounts are the same.")
    if kind != Transfer.Kind.REVERSAL and amount > settings.MAX_TRANSFER_AMOUNT:
        raise AmountAboveMaximum(f"At most {settings.MAX_TRANSFER_AMOUNT} can be moved at once.")
    request_hash = request_hash_of(
        kind=kind,
        source=src.number,
        destination=dst.number,
        amount=amount,
        currency=currency,
        reference=reference,
        reversal_of=reversal_of.pk if reversal_of else None,
        **({"held": True} if hold_until is not None else {}),
    )
    client_id = actor.client_id
    if key is not None and reversal_of is not None:
        # A reversal checks its original before inserting; a replay must answer before that check
        # (which a completed reversal would fail). Other kinds find a replay by the unique key.
        existing = Transfer.objects.filter(client_id=client_id, idempotency_key=key).first()
        if existing is not None and not transfer_key_release(existing, request_hash):
            return transfer_replay(existing, request_hash)
    if currency is None:
        currency = account_get(number=src.number).currency

    now = timezone.now()
    transfer = Transfer(
        id=uuid.uuid4(),
        kind=kind,
        status=Status.PENDING,
        source_account=src.number,
        source_ledger=src.ledger,
        destination_account=dst.number,
        destination_ledger=dst.ledger,
        amount=amount,
        currency=currency,
        reference=reference,
        client_id=client_id,
        idempotency_key=key,
        request_hash=request_hash,
        reversal_of=reversal_of,
        business_date=business_date_today(),
        deadline=hold_until or now + timedelta(seconds=settings.TRANSACTION_TIMEOUT),
        channel=actor.channel,
        created_by_id=actor.user_id,
        created_at=now,
    )

    def accept() -> None:
        if reversal_of is not None:
            _reversal_claim(reversal_of)
        ledger_sql.transfer_insert(transfer)
        auditlog_entry_created(transfer, actor=actor)

    # A hold stays prepared for hours: its leg is prepared in its ledger's own transaction.
    home = None if hold_until is not None else home_leg(transfer)
    started = time.monotonic()
    try:
        for _attempt in range(3):
            # What an attempt that lost the key to another request left on the transfer is undone.
            transfer.status, transfer.committed_at, transfer.finished_at = Status.PENDING, None, None
            transfer.failure_code, transfer.failure_detail = "", ""
            try:
                if home is None:
                    atomic_with_retry("default", accept)
                else:
                    home_accept(transfer, actor, accept, home)
                break
            except IntegrityError:
                if key is None:
                    raise
                # The key is taken: the winner's transfer is the answer — unless it was aborted
                # by an outage, which gives the key up to this request (``transfer_key_release``).
                existing = Transfer.objects.filter(client_id=client_id, idempotency_key=key).first()
                if existing is not None and not transfer_key_release(existing, request_hash):
                    return transfer_replay(existing, request_hash)
        else:
            raise LedgerBusy("Other requests with this idempotency key are being made; try again.")
    except CommitOutcomeUnknown:
        logger.warning("transfer %s: the control plane's server failed while committing the accept", transfer.id)
        # Recorded or not is unknown: a local transfer at home may even be COMPLETED, a cross-ledger
        # one PENDING (recovery voids it past its deadline). A replay tells.
        raise LedgerUnavailable(
            "A database did not answer while the transfer was being recorded; a replay with the same "
            "idempotency key tells whether it was made.",
            extra={"transfer_id": str(transfer.id)},
        ) from None
    except OperationalError:
        logger.warning("transfer: control-plane database failed at accept")
        raise LedgerUnavailable("The control-plane database did not answer; nothing was moved.") from None

    try:
        if transfer.is_final:
            pass  # refused at home, or a local transfer done in the accept's own commit
        elif home is not None:
            fault_point("after_accept_prepare")
            home_execute(transfer, actor, home)
        else:
            fault_point("after_accept")
            if hold_until is not None:
                debit_prepare(transfer, actor)
            elif transfer.is_cross_ledger:
                cross_ledger_execute(transfer, actor)
            else:
                local_execute(transfer, actor)
    except OperationalError:
        # The control plane went away mid-transfer; recovery settles it once it is back, and a
        # replay with the same idempotency key then answers with the outcome.
        logger.warning("transfer %s: control-plane database failed", transfer.id)
        raise LedgerUnavailable(
            "A database did not answer; the transfer will be completed or voided by recovery.",
            extra={"transfer_id": str(transfer.id)},
        ) from None
    transfer.replayed = False
    if transfer.is_final:  # one left to recovery is counted when recovery ends it
        record_transfer(
            kind=transfer.kind,
            outcome=transfer.failure_code or transfer.status,
            cross_ledger=transfer.is_cross_ledger,
            seconds=time.monotonic() - started,
        )
    error = transfer_refusal_error(transfer)
    if error is not None:
        error.replayed = False
        raise error
    return transfer


def _reversal_claim(original: Transfer) -> None:
    """Inside the accept transaction: lock the original, refuse a second live reversal."""
    locked = ledger_sql.transfer_lock_for_reversal(original.pk)
    if locked is None:
        raise TransferNotFound(f"No transfer {original.pk}.")
    kind, status, reversed_already = locked
    if kind == Transfer.Kind.REVERSAL:
        raise TransferNotReversible("A reversal cannot itself be reversed.")
    if status != Status.COMPLETED:
        raise TransferNotReversible(f"Only completed transfers can be reversed; this one is {status}.")
    if reversed_already:
        raise TransferAlreadyReversed("This transfer has already been reversed.")
