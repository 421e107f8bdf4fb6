"""One error hierarchy for every door (API, admin, commands, tasks).

A service refuses by raising an ``ApplicationError`` subclass with a stable machine ``code``; the
API renders it as RFC 9457 problem+json, the admin as a message, commands as an exit status. Codes
are part of the public contract: add new ones, never rename.
"""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    code = "application_error"
    title = "Request refused"
    http_status = 400
    # Set by the transfer engine on a refusal it recorded: the ABORTED transfer, and whether this
    # answer is the replay of an earlier request with the same idempotency key.
    transfer: Any = None
    replayed: bool = False

    def __init__(self, detail: str | None = None, *, code: str | None = None, extra: dict[str, Any] | None = None):
        self.detail = detail or self.title
        if code:
            self.code = code
        self.extra = extra or {}
        super().__init__(self.detail)


class ValidationFailed(ApplicationError):
    code = "validation_error"
    title = "Invalid input"
    http_status = 400


class NotFound(ApplicationError):
    code = "not_found"
    title = "Not found"
    http_status = 404


class Conflict(ApplicationError):
    code = "conflict"
    title = "Conflict"
    http_status = 409


class BusinessRuleViolation(ApplicationError):
    """The request is well formed but the bank's rules refuse it (funds, limits, status)."""

    code = "business_rule_violation"
    title = "Refused by a business rule"
    http_status = 422


class ServiceUnavailable(ApplicationError):
    code = "service_unavailable"
    title = "Service temporarily unavailable"
    http_status = 503


class InvalidAccountNumber(ValidationFailed):
    """Raised by ``accounts.numbers``; here so that the API door can name its field code."""

    code = "invalid_account_number"
    title = "Invalid account number"
