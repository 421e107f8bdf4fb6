"""A transfer across ledgers in three commits, when one leg's ledger is a database on the control
plane's own server (the designed topology: DB1 holds ``bank_core`` beside ``bank_source``).

That leg is the transfer's *home* leg: its steps share the control plane's transactions, one InnoDB
transaction across the two databases (``bankcore.db.server_transaction(join=…)``). The other leg
is decided on its own:

1. accept + prepare the home leg    (control plane's server: one commit, ``home_accept``)
2. decide: the other leg COMMITTED   (its ledger: one commit; the point of no return)
3. finish the home leg + COMPLETED   (control plane's server: one commit, ``home_finish``)

Each commit is one round trip (the checks are batched with the writes). A refusal at home leaves
the accept committed and then aborts the transfer (two commits); a refusal of the decision aborts
and voids the home leg in one. A transfer inside the home ledger is one commit altogether. The
rule recovery reads is the five-commit form's (``transfers.engine.cross``): the transfer is
decided once one leg is COMMITTED; the leg that was never prepared (the decision's) is the one
recovery tombstones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from bankcore.actors import Actor
from bankcore.db import LockConflictGaveUp, atomic_with_retry, same_server
from bankcore.errors import ApplicationError
from bankcore.faults import fault_point
from transfers import ledger_sql
from transfers.engine.checks import ledger_busy, leg_location, leg_pending_field, leg_refusal_found
from transfers.engine.legs import leg_decide, leg_post, leg_prepare_statements, leg_step_checked
from transfers.engine.local import local_statements
from transfers.engine.outcome import transfer_abort_decide, transfer_event, transfer_mark_committed
from transfers.errors import TransferRefused
from transfers.ledger_sql import Verdict
from transfers.models import Transfer, TransferLeg

logger = logging.getLogger(__name__)

Leg = TransferLeg.Leg
Status = Transfer.Status


def home_leg(transfer: Transfer) -> str | None:
    """The leg whose ledger shares the control plane's server, if any (the debit leg if both do);
    None when ``BANKCORE_SHARED_COMMITS`` is off."""
    if not settings.BANKCORE_SHARED_COMMITS:
        return None
    if same_server("default", transfer.source_ledger):
        return Leg.DEBIT
    if transfer.is_cross_ledger and same_server("default", transfer.destination_ledger):
        return Leg.CREDIT
    return None


def home_accept(transfer: Transfer, actor: Actor, accept: Callable[[], None], home: str) -> None:
    """Accept and the home leg's step in one commit: across ledgers, the home leg PREPARED (its
    checks batched with the commit); inside the home ledger, the whole transfer, COMPLETED. A
    refusal of the batched checks leaves the accept committed and nothing held, and the transfer is
    then aborted with the account's reason (``_prepare_after_accept``); a refusal raised before the
    commit (the local transfer's checks) or a lock given up on rolls everything back and records
    the transfer ABORTED instead, in one commit. IntegrityError (the idempotency key taken),
    OperationalError and CommitOutcomeUnknown propagate to the caller
    (``transfers.engine.accept.transfer_submit``)."""
    ledger, _ = leg_location(transfer, home)
    step: Callable[[], Verdict | None]
    if transfer.is_cross_ledger:
        step = lambda: leg_prepare_statements(transfer, home)  # noqa: E731
    else:
        now = timezone.now()
        transfer.status, transfer.committed_at, transfer.finished_at = Status.COMPLETED, now, now

        def step() -> None:
            local_statements(transfer)
            transfer_event(transfer, actor, "transfer.completed")

    def work() -> Verdict | None:
        accept()
        return step()

    try:
        verdict = atomic_with_retry("default", work, join=[ledger])
    except TransferRefused as refused:
        error = refused.error
    except LockConflictGaveUp:
        error = ledger_busy()
    else:
        if verdict is not None and not verdict:
            # The check was deferred and refused: the accept committed, nothing was held. (Outside
            # the try: the transfer exists now, so a failure from here on is not "nothing recorded".)
            _prepare_after_accept(transfer, actor, home)
        return
    now = timezone.now()
    transfer.status, transfer.committed_at, transfer.finished_at = Status.ABORTED, None, now
    transfer.failure_code, transfer.failure_detail = error.code, error.detail[:500]

    def refused_work() -> None:
        accept()
        transfer_event(transfer, actor, "transfer.aborted", failure_code=error.code)

    atomic_with_retry("default", refused_work)


def _prepare_after_accept(transfer: Transfer, actor: Actor, home: str) -> None:
    """The home leg's deferred check refused in the accept's commit, which recorded the transfer
    PENDING with nothing held: abort it with the account's reason, or, if the account has none by
    now, prepare the leg in its ledger's own transaction. A lock given up on aborts it as busy
    (``leg_refusal_found``, ``leg_step_checked``); a database that fails leaves it PENDING, for
    recovery to abort past its deadline."""
    try:
        refused = leg_refusal_found(transfer, home)
        if refused is None:
            leg_step_checked(transfer, home, lambda: leg_prepare_statements(transfer, home), doing="preparing")
            return
    except TransferRefused as again:
        refused = again
    transfer_abort_decide(transfer, actor, refused.error)


def home_execute(transfer: Transfer, actor: Actor, home: str) -> None:
    """Steps 2 and 3 of a transfer whose home leg is prepared (step 1 was the accept).
    ``CommitOutcomeUnknown`` from the decision propagates, as in the five-commit form."""
    decision = Leg.DEBIT if home == Leg.CREDIT else Leg.CREDIT
    try:
        leg_decide(transfer, decision)
    except TransferRefused as refused:
        _home_abort(transfer, actor, refused.error, home)
        return
    fault_point(f"after_decide_{decision}")
    try:
        home_finish(transfer, actor, home)
    except (OperationalError, LockConflictGaveUp):
        logger.warning("transfer %s: decided, finishing the %s leg deferred to recovery", transfer.id, home)
        transfer_mark_committed(transfer)


def home_finish(transfer: Transfer, actor: Actor, home: str) -> None:
    """The home leg PREPARED → COMMITTED (posted, its entry written) and the transfer COMPLETED,
    in one commit and one round trip: one update claims both rows (both or neither), and the
    posting and the audit event are written only with that claim. If recovery got to either
    first, nothing is written here and recovery finishes the rest."""
    ledger, pk = leg_location(transfer, home)

    def work() -> tuple[Verdict, datetime]:
        now = timezone.now()
        claimed = ledger_sql.leg_and_transfer_claim_deferred(ledger, transfer_id=transfer.id, leg=home, now=now)
        leg_post(
            ledger,
            leg=home,
            account_pk=pk,
            amount=transfer.amount,
            transfer_id=transfer.id,
            kind=transfer.kind,
            description=transfer.reference,
            now=now,
            release_pending=True,
            only_if=ledger_sql.VERDICT_OK,
        )
        transfer_event(transfer, actor, "transfer.completed", only_if=ledger_sql.VERDICT_OK)
        return claimed, now

    claimed, finished = atomic_with_retry("default", work, join=[ledger])
    if not claimed:
        transfer.refresh_from_db()
        return
    transfer.status, transfer.finished_at = Status.COMPLETED, finished
    transfer.committed_at = transfer.committed_at or finished


def _home_abort(transfer: Transfer, actor: Actor, error: ApplicationError, home: str) -> None:
    """The decision was refused: the transfer ABORTED with the reason and the home leg VOIDED
    (its pending amount released), in one commit. If recovery got there first, its outcome stands."""
    ledger, pk = leg_location(transfer, home)
    field = leg_pending_field(home)
    detail = error.detail[:500]

    def work() -> datetime | None:
        now = timezone.now()
        voided, aborted = ledger_sql.leg_void_and_transfer_abort(
            ledger, transfer_id=transfer.id, leg=home, now=now, failure_code=error.code, failure_detail=detail
        )
        if voided:
            ledger_sql.pending_add(ledger, account_pk=pk, field=field, amount=-transfer.amount, now=now)
        if not aborted:
            return None  # recovery aborted it first (its outcome stands); a leg it left is voided here
        transfer_event(transfer, actor, "transfer.aborted", failure_code=error.code)
        return now

    aborted = atomic_with_retry("default", work, join=[ledger])
    if aborted is None:
        transfer.refresh_from_db()
        return
    transfer.status, transfer.finished_at = Status.ABORTED, aborted
    transfer.failure_code, transfer.failure_detail = error.code, detail
