"""Account numbers: ``LL SSSSSSSSSS CC`` — two-digit ledger code, ten-digit serial, two check
digits (ISO 7064 MOD 97-10, as in IBAN). The ledger code routes a number to its database without a
lookup; the check digits catch every single-digit typo and every adjacent transposition before any
query runs."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from bankcore.errors import InvalidAccountNumber as InvalidAccountNumber
from bankcore.errors import NotFound

NUMBER_LENGTH = 14
SERIAL_DIGITS = 10


class UnknownLedger(NotFound):
    code = "account_not_found"
    title = "Account not found"


def _check_digits(body: str) -> str:
    return f"{98 - (int(body + '00') % 97):02d}"


def account_number_make(*, ledger_code: str, serial: int) -> str:
    if not (0 < serial < 10**SERIAL_DIGITS):
        raise ValueError(f"serial {serial} out of range")
    body = f"{ledger_code}{serial:0{SERIAL_DIGITS}d}"
    return body + _check_digits(body)


@dataclass(frozen=True)
class ParsedNumber:
    number: str
    ledger: str  # database alias
    serial: int


def account_number_serial(number: str) -> int:
    """The serial (the account's primary key) of a number already validated by
    ``account_number_parse``, such as one a transfer stores: no checks again."""
    return int(number[2:-2])


def account_number_parse(number: object) -> ParsedNumber:
    """Validate a number and route it to its ledger. Raises ``InvalidAccountNumber`` for anything
    malformed (wrong type, length, non-digits, bad check digits) and ``UnknownLedger`` for a well
    formed number of a ledger this deployment does not have."""
    if not isinstance(number, str):
        raise InvalidAccountNumber("An account number must be a string of digits.")
    cleaned = number.replace(" ", "")
    if len(cleaned) != NUMBER_LENGTH or not cleaned.isascii() or not cleaned.isdigit():
        raise InvalidAccountNumber(f"An account number has exactly {NUMBER_LENGTH} digits.")
    if _check_digits(cleaned[:-2]) != cleaned[-2:]:
        raise InvalidAccountNumber("The account number's check digits do not match; please check for a typo.")
    code = cleaned[:2]
    for alias, ledger_code in settings.LEDGERS.items():
        if ledger_code == code:
            return ParsedNumber(number=cleaned, ledger=alias, serial=account_number_serial(cleaned))
    raise UnknownLedger("No such account.")
