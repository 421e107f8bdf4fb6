import pytest
from django.conf import settings

from accounts.numbers import InvalidAccountNumber, UnknownLedger, account_number_make, account_number_parse


def test_number_routes_to_its_ledger():
    """Given each ledger's code, when a number is made and parsed, then it names that ledger and serial."""
    for alias, code in settings.LEDGERS.items():
        number = account_number_make(ledger_code=code, serial=42)
        parsed = account_number_parse(number)
        assert (parsed.ledger, parsed.serial, parsed.number) == (alias, 42, number)
        assert len(number) == 14 and number.startswith(code)


def test_every_single_digit_typo_is_caught():
    """Given a valid number, when any one digit is mistyped, then parsing refuses it."""
    number = account_number_make(ledger_code="01", serial=1234567)
    for position in range(len(number)):
        for digit in "0123456789":
            if digit == number[position]:
                continue
            typo = number[:position] + digit + number[position + 1 :]
            with pytest.raises((InvalidAccountNumber, UnknownLedger)):
                account_number_parse(typo)


def test_every_adjacent_transposition_is_caught():
    """Given a valid number, when two neighbouring digits swap, then parsing refuses it."""
    number = account_number_make(ledger_code="02", serial=9081726354)
    for position in range(len(number) - 1):
        a, b = number[position], number[position + 1]
        if a == b:
            continue
        swapped = number[:position] + b + a + number[position + 2 :]
        with pytest.raises((InvalidAccountNumber, UnknownLedger)):
            account_number_parse(swapped)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        12345678901234,
        "",
        "123",
        "0100000000014x",
        "０１０００００００００１４５",
        "01 0000 0000 0145 9",
        "1" * 100,
    ],
)
def test_malformed_numbers_are_refused_with_a_code(bad):
    """Given a value that is no account number, when parsed, then it is refused with a stable code."""
    with pytest.raises(InvalidAccountNumber) as error:
        account_number_parse(bad)
    assert error.value.code == "invalid_account_number"


def test_number_of_a_ledger_not_configured_is_unknown():
    """Given a well-formed number of a ledger this bank lacks, when parsed, then it is not found."""
    number = account_number_make(ledger_code="97", serial=1)
    with pytest.raises(UnknownLedger) as error:
        account_number_parse(number)
    assert error.value.code == "account_not_found"


def test_spaces_are_allowed_for_readability():
    """Given a number typed in groups of four, when parsed, then it is the same number."""
    number = account_number_make(ledger_code="01", serial=145)
    spaced = " ".join(number[i : i + 4] for i in range(0, 14, 4))
    assert account_number_parse(spaced).number == number
