"""What a batch carries (``transfers.engine.batch``): the caller's items and their outcomes, and
each item's state as it goes through the batch's steps (``BatchWork``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from accounts.numbers import account_number_serial
from bankcore.actors import Actor
from bankcore.errors import ApplicationError
from transfers.models import Transfer


@dataclass(frozen=True)
class BatchItem:
    source_account: str
    destination_account: str
    amount: Decimal | str
    currency: str | None = None
    reference: str = ""
    idempotency_key: str | None = None  # per item, as transfer_create's
    # Item i linked: i and i + 1 form one chain, which happens wholly or not at all.
    linked: bool = False
    # Who asked for this item, when not the batch's actor: a single transfer coalesced into a batch
    # (``transfers.group_commit``) is made as its own client's (its idempotency keys, its channel)
    # and keeps its own request id and address in the audit trail.
    actor: Actor | None = None


@dataclass
class BatchOutcome:
    # COMPLETED; ABORTED for a recorded refusal; PENDING/COMMITTED when a ledger failed and
    # recovery finishes it; None when the item was refused before it was accepted.
    transfer: Transfer | None
    error: ApplicationError | None  # the refusal, with its stable code; None when it moved
    replayed: bool = False


@dataclass(eq=False)
class BatchWork:
    position: int
    transfer: Transfer
    actor: Actor  # the item's, else the batch's
    chain: int | None = None  # the linked chain it is in
    error: ApplicationError | None = None  # refused; recorded ABORTED at complete
    held: bool = False  # its debit leg is (or may be) PREPARED
    credit_held: bool = False  # a linked item's credit leg is PREPARED
    decided: bool = False  # decided: its credit leg COMMITTED, or its chain COMMITTED
    unknown: bool = False  # a commit's outcome unknown: left to recovery

    @property
    def source(self) -> int:
        return account_number_serial(self.transfer.source_account)

    @property
    def destination(self) -> int:
        return account_number_serial(self.transfer.destination_account)

    @property
    def made_in_one_ledger(self) -> bool:
        """An unlinked item inside one ledger: made in its prepare commit."""
        return not self.transfer.is_cross_ledger and self.chain is None


def work_grouped(work: list[BatchWork], key: Callable[[BatchWork], str]) -> list[tuple[str, list[BatchWork]]]:
    groups: dict[str, list[BatchWork]] = {}
    for w in work:
        groups.setdefault(key(w), []).append(w)
    return sorted(groups.items())
