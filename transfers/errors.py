"""Refusal codes of the transfer engine. Stable: partners match on them; add, never rename.

Refusals found before a transfer is accepted (malformed input) are raised. Refusals found while
preparing (funds, limits, account state) are recorded on the ABORTED transfer as
``failure_code`` so that an idempotent replay answers the same; ``transfer_refusal_error`` turns
that record back into the exception the doors render.
"""

from __future__ import annotations

from accounts.errors import AccountClosed, AccountFrozen, AccountNotFound, InternalAccount
from bankcore.errors import (
    ApplicationError,
    BusinessRuleViolation,
    Conflict,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)

# Defined in the kernel, as opening an account refuses them too; refusals of the engine all the same.
from bankcore.idempotency import IdempotencyKeyReused as IdempotencyKeyReused
from bankcore.idempotency import InvalidIdempotencyKey as InvalidIdempotencyKey
from bankcore.money import AmountAboveMaximum as AmountAboveMaximum


class SameAccount(BusinessRuleViolation):
    """Well-formed, each field valid, but a transfer needs two accounts (422, as the schema cannot
    state that two fields differ)."""

    code = "same_account"
    title = "Source and destination are the same account"


class InsufficientFunds(BusinessRuleViolation):
    code = "insufficient_funds"
    title = "Insufficient funds"


class DailyLimitExceeded(BusinessRuleViolation):
    code = "daily_limit_exceeded"
    title = "Daily transfer limit exceeded"


class CurrencyMismatch(BusinessRuleViolation):
    code = "currency_mismatch"
    title = "Currency mismatch"


class TransferTimedOut(BusinessRuleViolation):
    code = "transfer_timed_out"
    title = "Transfer timed out"


class LinkedTransferFailed(BusinessRuleViolation):
    """An item of a linked chain (``transfers.engine.batch``) not made because another item of its chain
    was refused: a chain happens wholly or not at all."""

    code = "linked_transfer_failed"
    title = "Another transfer of its linked chain was refused"


class LedgerUnavailable(ServiceUnavailable):
    code = "ledger_unavailable"
    title = "A ledger database is unavailable"


class LedgerBusy(ServiceUnavailable):
    code = "ledger_busy"
    title = "The account is busy; try again"


class TransferNotFound(ApplicationError):
    code = "transfer_not_found"
    title = "Transfer not found"
    http_status = 404


class TransferNotReversible(BusinessRuleViolation):
    code = "transfer_not_reversible"
    title = "Transfer cannot be reversed"


class TransferAlreadyReversed(Conflict):
    code = "transfer_already_reversed"
    title = "Transfer already reversed"


class InvalidReference(ValidationFailed):
    code = "invalid_reference"
    title = "Invalid reference"


class ReversalForbidden(ApplicationError):
    code = "reversal_not_allowed"
    title = "Not allowed to reverse this transfer"
    http_status = 403


class ApprovalRequired(ApplicationError):
    """Four eyes, at a door without an approval queue (the partner API): nothing is moved or stored."""

    code = "approval_required"
    title = "A supervisor's approval is required"
    http_status = 403


class RoleRequired(ApplicationError):
    """A superuser outside the teller and supervisor roles: superusers administer, they move no money."""

    code = "role_required"
    title = "A teller or supervisor role is required"
    http_status = 403


# Four eyes (``transfers.approvals``): refusals of a request and of its decision.
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


# Every code that can be recorded on an ABORTED transfer, and the error that renders it.
RECORDED_REFUSALS: dict[str, type[ApplicationError]] = {
    cls.code: cls
    for cls in (
        AccountNotFound,
        AccountFrozen,
        AccountClosed,
        InternalAccount,
        CurrencyMismatch,
        InsufficientFunds,
        DailyLimitExceeded,
        TransferTimedOut,
        LedgerUnavailable,
        LedgerBusy,
        LinkedTransferFailed,
    )
}


# Recorded codes that are not an answer to the request but to the moment it came in: a server that
# did not answer, a lock given up on, a deadline missed because of either. Nothing was moved (the
# transfer is ABORTED), and a retry under the same idempotency key is carried out anew
# (``transfers.engine.accept``) instead of replaying the failure. Every other recorded code is a refusal
# of the request itself and is final for its key.
NOT_AN_OUTCOME: frozenset[str] = frozenset({LedgerUnavailable.code, LedgerBusy.code, TransferTimedOut.code})


class TransferRefused(Exception):
    """Raised inside a prepare step to roll it back; carries the code to record."""

    def __init__(self, error: ApplicationError):
        self.error = error
        super().__init__(error.detail)
