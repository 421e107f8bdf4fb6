"""Group commit: the single transfers a process makes at the same time, coalesced into one batch
of the batch engine (``transfers.engine.batch.transfers_create_batch``), so that they share its commits.
The doors' transfers (``transfers.approvals.money_movement_submit`` and
``transfers.approvals.money_movement_execute``: the back office and the API) go through it when
``GROUP_COMMIT`` is on; an approved movement, a hold and whatever runs inside an atomic block take
the single path.

Leader and followers, no thread of its own. A transfer that finds no other transfer in progress in
its process is made alone, at once, by the single path: at low load nothing waits. One that finds
others in progress opens a window and leads it: it waits up to ``GROUP_COMMIT_WAIT_MS`` for the
transfers that come meanwhile (the followers, which join it; it closes early at
``GROUP_COMMIT_MAX_ITEMS``), then makes them all as one batch on its own database connections and
hands each follower its ``BatchOutcome``. Each item carries its own actor: its client's idempotency
keys, its channel, its request id and address in the audit trail. A batch holds a client's key
once: a second request with a key in the open window is made alone and races the first as any two
requests with one key do (one makes it, the other replays it). A follower touches no database:
it answers what ``transfer_create`` would have — the transfer, with ``replayed``, or the same
refusal with the same ``transfer`` and ``replayed``.

A batch that fails as a whole (a database that does not answer) gives each of its transfers the
answer the single path gives then: ``LedgerUnavailable`` (503). Whatever it left half made is in
the same states as the single path leaves (the engine is the same), so recovery finishes or voids
it, and a retry under the same idempotency key replays it or, once an outage aborted it, takes the
key again (``transfers.engine.accept.transfer_key_release``).
"""

from __future__ import annotations

import threading
from decimal import Decimal

from django.conf import settings
from django.db import DatabaseError, connections

from bankcore.actors import Actor
from bankcore.errors import ApplicationError
from transfers import services
from transfers.engine.batch import transfers_create_batch
from transfers.engine.batch_items import BatchItem, BatchOutcome
from transfers.errors import LedgerUnavailable
from transfers.models import Transfer

_lock = threading.Lock()
_open: _Window | None = None  # the window transfers join, while its leader waits
_in_progress = 0  # transfers this process is making right now, alone or in a batch


class _Window:
    """The transfers of one batch: filled by its leader and followers, then made by the leader."""

    def __init__(self) -> None:
        self.items: list[BatchItem] = []
        self.keys: set[tuple[str, str]] = set()  # (client, idempotency key) of the items
        self.full = threading.Event()
        self.done = threading.Event()
        self.outcomes: list[BatchOutcome] = []
        self.failure: Exception | None = None

    def join(self, item: BatchItem, key: tuple[str, str] | None) -> int:
        self.items.append(item)
        if key is not None:
            self.keys.add(key)
        if len(self.items) >= settings.GROUP_COMMIT_MAX_ITEMS:
            self.full.set()
        return len(self.items) - 1

    def answer(self, position: int) -> Transfer:
        """What ``transfer_create`` returns or raises for the item at ``position``."""
        if self.failure is not None:
            raise _failure_answer(self.failure) from self.failure
        outcome = self.outcomes[position]
        if outcome.error is not None:
            if outcome.transfer is not None:
                outcome.error.transfer = outcome.transfer
            outcome.error.replayed = outcome.replayed
            raise outcome.error
        assert outcome.transfer is not None
        outcome.transfer.replayed = outcome.replayed
        return outcome.transfer


def transfer_create(
    *,
    actor: Actor,
    source_account: str,
    destination_account: str,
    amount: Decimal | str,
    currency: str | None = None,
    reference: str = "",
    idempotency_key: str | None = None,
) -> Transfer:
    """``transfers.services.transfer_create``, the same answers and refusals, made in a batch with
    the transfers this process makes at the same time when ``GROUP_COMMIT`` is on. Inside an atomic
    block, whose transaction a batch made on another thread's connections could not join, always
    by the single path."""
    item = BatchItem(
        source_account=source_account,
        destination_account=destination_account,
        amount=amount,
        currency=currency,
        reference=reference,
        idempotency_key=idempotency_key,
        actor=actor,
    )
    if not settings.GROUP_COMMIT or any(c.in_atomic_block for c in connections.all(initialized_only=True)):
        return _single(item)
    key = (actor.client_id, idempotency_key) if idempotency_key else None
    global _open, _in_progress
    with _lock:
        window = _open
        if (window is None and _in_progress == 0) or (window is not None and key in window.keys):
            # Nothing else in progress: made alone, at once. Or its key is in the window already
            # (a retry racing its first try): alone too, where the key's unique index settles which
            # of the two is made and which replays it, as between any two requests.
            window = None
            _in_progress += 1
        else:
            if window is None:
                window = _open = _Window()
            position = window.join(item, key)
            if window.full.is_set():
                _open = None
    if window is None:
        try:
            return _single(item)
        finally:
            with _lock:
                _in_progress -= 1
    if position > 0:
        window.done.wait()
        return window.answer(position)
    return _lead(window)


def _lead(window: _Window) -> Transfer:
    """Wait for the followers (until the window is full, or ``GROUP_COMMIT_WAIT_MS``), close the
    window, make its transfers, hand the followers their outcomes."""
    global _open, _in_progress
    window.full.wait(settings.GROUP_COMMIT_WAIT_MS / 1000)
    with _lock:
        if _open is window:
            _open = None
        count = len(window.items)  # closed: nobody joins any more
        _in_progress += count
    try:
        if count == 1:
            return _single(window.items[0])  # nobody came: the single path, as it would have been
        window.outcomes = transfers_create_batch(actor=_actor(window.items[0]), items=window.items)
    except Exception as failure:
        window.failure = failure
        if count == 1:
            raise
    finally:
        with _lock:
            _in_progress -= count
        if count > 1 and not window.outcomes and window.failure is None:  # the leader's thread is stopped
            window.failure = RuntimeError("The batch was stopped before it was made.")
        window.done.set()  # whatever happened: a follower never waits for ever
    return window.answer(0)


def _actor(item: BatchItem) -> Actor:
    assert item.actor is not None
    return item.actor


def _single(item: BatchItem) -> Transfer:
    return services.transfer_create(
        actor=_actor(item),
        source_account=item.source_account,
        destination_account=item.destination_account,
        amount=item.amount,
        currency=item.currency,
        reference=item.reference,
        idempotency_key=item.idempotency_key,
    )


def _failure_answer(failure: Exception) -> Exception:
    """The error each transfer of a batch that failed as a whole answers, one of its own each: the
    batch's own refusal (``LedgerUnavailable``, ``LedgerBusy``), or, for a database that failed,
    the single path's answer to one failing mid-transfer."""
    if isinstance(failure, ApplicationError):
        return type(failure)(failure.detail, code=failure.code, extra=dict(failure.extra))
    if isinstance(failure, DatabaseError):
        return LedgerUnavailable(
            "A database did not answer; the transfer will be completed or voided by recovery, and a replay "
            "with the same idempotency key tells which."
        )
    return RuntimeError("The batch this transfer was made in failed.")
