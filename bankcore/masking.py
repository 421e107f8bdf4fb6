"""Masking of the seed's sensitive fields (§12.1: password, account_number, balance) before anything
leaves for the audit file.

- Keys naming a password anywhere (any case: ``password``, ``new_password1``, ``old_password``)
  are dropped: a password is never written, not even masked; so are secrets, tokens, CSRF tokens
  and authorization headers.
- Account numbers (14 digits, also inside free text, also written in groups separated by spaces or
  dashes such as ``0100 0000 0007 42``) keep their last 4 digits only.
- Balance fields (``posted``, ``pending_*``, ``available``, ``balance*``) are replaced by a mask.
"""

from __future__ import annotations

import functools
import re
from typing import Any

MASK = "***"
# 14 digits, each pair of neighbours optionally split by one space or dash: the parser
# (accounts.numbers) accepts numbers typed in groups, so such a number is as sensitive as a plain one.
# Masking a 14-digit run that was not an account number costs nothing; missing one would.
_ACCOUNT_NUMBER = re.compile(r"(?<!\d)\d(?:[ -]?\d){13}(?!\d)")
_DROPPED_PARTS = ("password", "passwd", "csrf", "authorization", "secret", "token")
_BALANCE_KEYS = {"posted", "available", "pending", "pending_debits", "pending_credits"}
_BALANCE_PREFIXES = ("balance", "pending_", "posted_", "available_")


def is_dropped_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in _DROPPED_PARTS) or lowered in {"access", "refresh"}


def is_balance_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in _BALANCE_KEYS or lowered.startswith(_BALANCE_PREFIXES)


def mask_text(text: str) -> str:
    """Every account number in ``text`` (plain or grouped) down to its last 4 digits."""
    return _ACCOUNT_NUMBER.sub(lambda m: "*" * 10 + re.sub(r"[ -]", "", m.group())[-4:], text)


@functools.lru_cache(maxsize=4096)
def _key_rule(name: str) -> tuple[bool, bool, str]:
    """(dropped, balance, masked name) of a dict key: keys repeat on every line, so decided once."""
    return is_dropped_key(name), is_balance_key(name), mask_text(name)


def mask(value: Any) -> Any:
    """A copy of ``value`` (JSON-like: dicts, lists, scalars) safe to write to the audit file."""
    if isinstance(value, dict):
        masked: dict[str, Any] = {}
        for key, item in value.items():
            dropped, balance, name = _key_rule(str(key))
            if dropped:
                continue
            masked[name] = MASK if balance and item not in (None, "") else mask(item)
        return masked
    if isinstance(value, (list, tuple)):
        return [mask(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        # A JSON number can carry an account number too (ledger codes 10 and up have no leading 0).
        text = str(value)
        masked_number = mask_text(text)
        return value if masked_number == text else masked_number
    return mask_text(str(value))
