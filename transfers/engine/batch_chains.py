"""A batch's linked chains (``transfers.engine.batch``): an item marked ``linked`` forms one
chain with the item after it, and a chain happens wholly or not at all. Its items are refused
together (before the accept, or after any step), and decided together by step 4, in one commit of
the control plane."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from django.db import OperationalError
from django.utils import timezone

from bankcore.db import CommitOutcomeUnknown, atomic_with_retry
from bankcore.errors import ApplicationError
from transfers import batch_sql
from transfers.engine.batch_items import BatchItem, BatchOutcome, BatchWork
from transfers.errors import NOT_AN_OUTCOME, LedgerUnavailable, LinkedTransferFailed, TransferTimedOut
from transfers.models import Transfer

Status = Transfer.Status


def chains(items: Sequence[BatchItem]) -> Iterator[list[int]]:
    """The positions of the items, grouped in chains (an unlinked item is a chain of one). A last
    item marked ``linked`` closes its chain."""
    chain: list[int] = []
    for position, item in enumerate(items):
        chain.append(position)
        if not item.linked:
            yield chain
            chain = []
    if chain:
        yield chain


def _chain_error(cause: ApplicationError) -> ApplicationError:
    """What the other items of a chain one item of which was refused with ``cause`` are refused
    with: an outage's own code (not an outcome: a retry under the keys makes the chain anew), else
    ``linked_transfer_failed``."""
    if cause.code in NOT_AN_OUTCOME:
        return type(cause)(cause.detail)
    return LinkedTransferFailed("Another transfer of its linked chain was refused; nothing of the chain was made.")


def chains_refused_before(
    work: list[BatchWork], chain_of: dict[int, int], outcomes: dict[int, BatchOutcome]
) -> list[BatchWork]:
    """The items of a chain one item of which was refused before the accept (or replays a
    refusal) are refused too, before the accept."""
    causes: dict[int, ApplicationError] = {}
    for position, outcome in outcomes.items():
        chain = chain_of.get(position)
        if chain is not None and outcome.error is not None and not isinstance(outcome.error, LinkedTransferFailed):
            causes.setdefault(chain, outcome.error)
    kept = []
    for w in work:
        if w.chain in causes:
            outcomes[w.position] = BatchOutcome(None, _chain_error(causes[w.chain]))
        else:
            kept.append(w)
    return kept


def chains_fail(work: list[BatchWork]) -> None:
    """Refuse every item of a chain in which one item is refused (or left to recovery: then the
    whole chain is, undecided, for recovery to abort)."""
    causes: dict[int, ApplicationError] = {}
    unknown: set[int] = set()
    for w in work:
        if w.chain is None:
            continue
        if w.unknown:
            unknown.add(w.chain)
        elif w.error is not None and not isinstance(w.error, LinkedTransferFailed):
            causes.setdefault(w.chain, w.error)
    for w in work:
        if w.chain in unknown:
            w.unknown = True
        elif w.chain in causes and w.error is None:
            w.error = _chain_error(causes[w.chain])


def chains_decide(linked: list[BatchWork]) -> None:
    """Step 4: every chain whose items all prepared both legs decided at once, in one commit of
    the control plane: its transfers PENDING → COMMITTED together, or, if recovery aborted one of
    them meanwhile (past its deadline), none; that chain is then refused."""
    by_chain: dict[int, list[BatchWork]] = {}
    for w in linked:
        if w.chain is not None:  # every item given here is in a chain
            by_chain.setdefault(w.chain, []).append(w)

    def decide() -> set[int]:
        now = timezone.now()
        open_ids = batch_sql.transfers_lock_open([w.transfer.id for w in linked])
        decided = {chain for chain, members in by_chain.items() if all(w.transfer.id in open_ids for w in members)}
        ids = [w.transfer.id for w in linked if w.chain in decided]
        if ids:
            batch_sql.transfers_mark_committed_many(ids, now=now)
        return decided

    try:
        decided = atomic_with_retry("default", decide)
    except CommitOutcomeUnknown:
        for w in linked:
            w.unknown = True  # COMMITTED or not: recovery finishes or aborts each chain as a whole
        return
    except OperationalError:
        for w in linked:
            w.error = LedgerUnavailable("The control-plane database did not answer; the transfer was not made.")
        return
    for w in linked:
        if w.chain in decided:
            w.decided = True
            w.transfer.status = Status.COMMITTED
        else:
            w.error = TransferTimedOut("The transfer timed out and was voided by recovery.")
