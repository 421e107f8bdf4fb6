"""Step 1 of the batched engine (``transfers.engine.batch``): every item checked as
``transfer_create`` checks its arguments, the replays answered, and the rest stored PENDING in one
commit of the control plane."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from functools import partial, reduce
from operator import or_

from django.conf import settings
from django.db import IntegrityError, OperationalError
from django.db.models import Q
from django.utils import timezone

from accounts.errors import AccountNotFound
from accounts.numbers import account_number_parse
from audit.services import auditlog_entry_created
from bankcore.actors import Actor
from bankcore.db import CommitOutcomeUnknown, atomic_with_retry
from bankcore.errors import ApplicationError
from bankcore.idempotency import InvalidIdempotencyKey, idempotency_key_clean
from bankcore.money import currency_parse, money_parse
from transfers import batch_sql
from transfers.engine.accept import (
    business_date_today,
    reference_clean,
    request_hash_of,
    transfer_key_release,
    transfer_replay,
)
from transfers.engine.batch_chains import chains_refused_before
from transfers.engine.batch_items import BatchItem, BatchOutcome, BatchWork, work_grouped
from transfers.errors import AmountAboveMaximum, LedgerBusy, LedgerUnavailable, SameAccount
from transfers.models import Transfer, TransferBatch

Status = Transfer.Status


def _new_transfer(
    actor: Actor, item: BatchItem, batch: TransferBatch | None, position: int, now: datetime, today: date
) -> Transfer:
    """The item as a transfer to accept, checked as ``transfer_create`` checks its arguments (the
    same refusals, raised; the same request hash, so that the item's key replays alike)."""
    amount = money_parse(item.amount)
    currency = currency_parse(item.currency) if item.currency is not None else None
    reference = reference_clean(item.reference)
    key = idempotency_key_clean(item.idempotency_key)
    src = account_number_parse(item.source_account)
    dst = account_number_parse(item.destination_account)
    if src.number == dst.number:
        raise SameAccount("The source and destination accounts are the same.")
    if amount > settings.MAX_TRANSFER_AMOUNT:
        raise AmountAboveMaximum(f"At most {settings.MAX_TRANSFER_AMOUNT} can be moved at once.")
    return Transfer(
        id=uuid.uuid4(),
        kind=Transfer.Kind.TRANSFER,
        status=Status.PENDING,
        source_account=src.number,
        source_ledger=src.ledger,
        destination_account=dst.number,
        destination_ledger=dst.ledger,
        amount=amount,
        currency=currency or "",  # "": its source account's, read before the accept
        reference=reference,
        client_id=actor.client_id,
        idempotency_key=key,
        request_hash=request_hash_of(
            kind=Transfer.Kind.TRANSFER,
            source=src.number,
            destination=dst.number,
            amount=amount,
            currency=currency,
            reference=reference,
            reversal_of=None,
        ),
        business_date=today,
        deadline=now + timedelta(seconds=settings.TRANSACTION_TIMEOUT),
        channel=actor.channel,
        created_by_id=actor.user_id,
        created_at=now,
        batch=batch,
        batch_position=position if batch is not None else None,
    )


def items_accept(
    actor: Actor,
    items: Sequence[BatchItem],
    chain_of: dict[int, int],
    refused: Mapping[int, ApplicationError],
    batch: TransferBatch | None,
    outcomes: dict[int, BatchOutcome],
) -> list[BatchWork]:
    """Step 1: check every item, answer the replays, refuse the chains one item of which is
    refused already, and store the rest PENDING in one commit. A key another request takes
    meanwhile fails the insert: the replays are read again and the accept retried."""
    now, today = timezone.now(), business_date_today()
    work: list[BatchWork] = []
    keys: set[tuple[str, str]] = set()  # (client, idempotency key)
    for position, item in enumerate(items):
        by = item.actor or actor
        try:
            if position in refused:
                raise refused[position]
            transfer = _new_transfer(by, item, batch, position, now, today)
            key = (transfer.client_id, transfer.idempotency_key) if transfer.idempotency_key else None
            if key is not None and key in keys:
                raise InvalidIdempotencyKey("An idempotency key is given to more than one item of the batch.")
        except ApplicationError as refusal:
            outcomes[position] = BatchOutcome(None, refusal)
            continue
        if key is not None:
            keys.add(key)
        work.append(BatchWork(position, transfer, by, chain=chain_of.get(position)))
    work = _currencies_resolve(work, outcomes)
    for _attempt in range(3):
        work = _replays_answer(work, keys, outcomes)
        work = chains_refused_before(work, chain_of, outcomes)
        if not work:
            return work
        try:
            atomic_with_retry("default", partial(_accept_statements, work))
            return work
        except IntegrityError:
            continue
        except CommitOutcomeUnknown:
            error: ApplicationError = LedgerUnavailable(
                "A database did not answer while the transfers were being recorded; a replay with the same "
                "idempotency keys tells whether they were made."
            )
        except OperationalError:
            error = LedgerUnavailable("The control-plane database did not answer; nothing was moved.")
        for w in work:
            outcomes[w.position] = BatchOutcome(None, error)
        return []
    for w in work:
        outcomes[w.position] = BatchOutcome(
            None, LedgerBusy("Other requests with these idempotency keys are being made; try again.")
        )
    return []


def _accept_statements(work: list[BatchWork]) -> None:
    batch_sql.transfers_insert_many([w.transfer for w in work])
    for w in work:
        auditlog_entry_created(w.transfer, actor=w.actor)


def _currencies_resolve(work: list[BatchWork], outcomes: dict[int, BatchOutcome]) -> list[BatchWork]:
    """An item that names no currency takes its source account's, read in one query per ledger;
    a source that does not exist is refused before the accept, as ``transfer_create`` refuses it."""
    needed = [w for w in work if not w.transfer.currency]
    found: dict[tuple[str, int], tuple[str, str]] = {}
    for ledger, group in work_grouped(needed, lambda w: w.transfer.source_ledger):
        for pk, account in batch_sql.accounts_currency(ledger, sorted({w.source for w in group})).items():
            found[(ledger, pk)] = account
    kept = []
    for w in work:
        transfer = w.transfer
        if not transfer.currency:
            source = found.get((transfer.source_ledger, w.source))
            if source is None or source[0] != transfer.source_account:
                outcomes[w.position] = BatchOutcome(None, AccountNotFound(f"No account {transfer.source_account}."))
                continue
            transfer.currency = source[1]
        kept.append(w)
    return kept


def _replays_answer(
    work: list[BatchWork], keys: set[tuple[str, str]], outcomes: dict[int, BatchOutcome]
) -> list[BatchWork]:
    """Items whose key was used before: the first outcome answered again (or the key given up by
    a transfer an outage aborted, ``transfer_key_release``), in one query for the batch."""
    if not keys:
        return work
    by_client: dict[str, list[str]] = {}
    for client, name in keys:
        by_client.setdefault(client, []).append(name)
    either = reduce(or_, (Q(client_id=client, idempotency_key__in=names) for client, names in by_client.items()))
    existing = {(t.client_id, t.idempotency_key): t for t in Transfer.objects.filter(either)}
    kept = []
    for w in work:
        earlier = existing.get((w.transfer.client_id, w.transfer.idempotency_key))
        if earlier is None or transfer_key_release(earlier, w.transfer.request_hash):
            kept.append(w)
            continue
        try:
            replayed = transfer_replay(earlier, w.transfer.request_hash)
        except ApplicationError as error:
            outcomes[w.position] = BatchOutcome(
                getattr(error, "transfer", None), error, bool(getattr(error, "replayed", False))
            )
        else:
            outcomes[w.position] = BatchOutcome(replayed, None, True)
    return kept
