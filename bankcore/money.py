"""Exact money. Amounts are ``Decimal`` with two places (or strings that parse to one); a float is
refused outright because it cannot say 0.10 exactly."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from bankcore.errors import BusinessRuleViolation, ValidationFailed

CENT = Decimal("0.01")
# DecimalField(max_digits=20, decimal_places=2): at most 18 digits before the point.
MAX_DIGITS = 20
PLACES = 2
CURRENCY_LENGTH = 3


class InvalidAmount(ValidationFailed):
    code = "invalid_amount"
    title = "Invalid amount"


class InvalidCurrency(ValidationFailed):
    code = "invalid_currency"
    title = "Invalid currency"


class AmountAboveMaximum(BusinessRuleViolation):
    """More than ``MAX_TRANSFER_AMOUNT`` in one movement of money (an opening deposit included)."""

    code = "amount_above_maximum"
    title = "Amount above the maximum per transfer"


def money_parse(value: object) -> Decimal:
    """A positive amount with at most two decimal places, as ``Decimal``. Accepts ``Decimal``,
    ``int`` or a plain decimal string ("125.50"); refuses floats, booleans, NaN, infinity,
    exponent notation, signs, surrounding junk and more digits than the column holds."""
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidAmount('Amounts must be given as decimal strings, e.g. "125.50", not as numbers.')
    if isinstance(value, int):
        value = Decimal(value)
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > 40 or not all(c.isascii() and (c.isdigit() or c == ".") for c in text):
            raise InvalidAmount(
                'An amount is a positive decimal string with at most two decimal places, e.g. "125.50".'
            )
        if text.count(".") > 1 or text.startswith(".") or text.endswith("."):
            raise InvalidAmount(
                'An amount is a positive decimal string with at most two decimal places, e.g. "125.50".'
            )
        try:
            value = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the character check above rules this out
            raise InvalidAmount("Not a decimal amount.") from None
    if not isinstance(value, Decimal):
        raise InvalidAmount('An amount is a positive decimal string with at most two decimal places, e.g. "125.50".')
    if not value.is_finite():
        raise InvalidAmount("An amount must be a finite number.")
    if value <= 0:
        raise InvalidAmount("An amount must be greater than zero.")
    # Before any quantize: the decimal context holds 28 digits, and a 27-digit amount quantized to
    # cents needs 29 (InvalidOperation, a 500 the hostile-request corpus found).
    if value.adjusted() >= MAX_DIGITS - PLACES:
        raise InvalidAmount("The amount is larger than any account can hold.")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -PLACES and value != value.quantize(CENT):
        raise InvalidAmount("An amount has at most two decimal places.")
    return value.quantize(CENT)


def currency_parse(value: object) -> str:
    if (
        not isinstance(value, str)
        or len(value) != CURRENCY_LENGTH
        or not value.isascii()
        or not value.isalpha()
        or not value.isupper()
    ):
        raise InvalidCurrency('A currency is a three-letter ISO 4217 code in capitals, e.g. "CNY".')
    return value
