"""How the back office writes money, account numbers, ids and times: one way each, for the admin
screens of every app and for their templates (``backoffice/templatetags/backoffice.py``)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils import timezone
from django.utils.html import format_html

NBSP = "\u00a0"


def amount_text(value: Any, currency: str = "", *, signed: bool = False) -> str:
    """``1234.5`` → "1,234.50 CNY": digits grouped by three, two decimals, the currency beside it;
    with ``signed``, "+" or "-" in front. The one way the back office writes an amount."""
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    sign = "-" if amount < 0 else ("+" if signed and amount > 0 else "")
    text = f"{sign}{abs(amount):,.2f}"
    return f"{text}{NBSP}{currency}" if currency else text


def money(value: Any, currency: str = "") -> str:
    """ "10,000.00 CNY"."""
    return amount_text(value, currency)


def signed_money(value: Any, currency: str = "") -> str:
    """An amount in or out of an account: "+100.00 CNY", "-100.00 CNY"."""
    return amount_text(value, currency, signed=True)


def account_no(number: Any) -> str:
    """An account number in groups of four for reading ("0100 0000 0045 10"); what is not one,
    as it is."""
    text = str(number or "")
    if len(text) != 14 or not text.isdigit():
        return text
    return NBSP.join(text[i : i + 4] for i in range(0, len(text), 4))


def short_id(value: Any) -> str:
    """A transfer's id as people read it out: its first eight hex digits in two groups."""
    text = str(value or "").replace("-", "")[:8]
    return f"{text[:4]}{NBSP}{text[4:]}" if len(text) == 8 else text


GROUPABLE = re.compile(r"(?<![\d.,])(\d{14}|\d{4,}\.\d{2})(?![\d.,])")


def in_words(text: Any) -> str:
    """A service's message with its amounts grouped and its account numbers split for reading."""

    def group(match: re.Match[str]) -> str:
        found = match.group(1)
        return account_no(found) if "." not in found else amount_text(found)

    return GROUPABLE.sub(group, str(text))


def local_time(value: Any) -> str:
    """A moment in the back office's time zone, with the zone said: "2026-12-07 18:02 +0800"."""
    if not value:
        return "—"
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M %z}"


def status_badge(label: str, tone: str = "") -> str:
    """A state as a coloured badge; ``tone``: ok, bad, wait or neutral."""
    return format_html('<span class="bo-badge bo-badge-{}">{}</span>', tone or "neutral", label)
