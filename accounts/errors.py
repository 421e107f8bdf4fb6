"""Refusals of the accounts app. Codes are stable: clients match on them."""

from bankcore.errors import BusinessRuleViolation, NotFound, ValidationFailed


class AccountNotFound(NotFound):
    code = "account_not_found"
    title = "Account not found"


class AccountFrozen(BusinessRuleViolation):
    code = "account_frozen"
    title = "Account is frozen"


class AccountClosed(BusinessRuleViolation):
    code = "account_closed"
    title = "Account is closed"


class AccountNotEmpty(BusinessRuleViolation):
    code = "account_not_empty"
    title = "Account still holds money"


class InvalidAccountState(BusinessRuleViolation):
    code = "invalid_account_state"
    title = "Not allowed in the account's current state"


class InvalidHolder(ValidationFailed):
    code = "invalid_holder"
    title = "Invalid account holder"


class InternalAccount(BusinessRuleViolation):
    code = "internal_account"
    title = "Not allowed on an internal account"
