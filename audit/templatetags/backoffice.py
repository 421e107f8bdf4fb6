"""Template helpers of the back office: the environment banner every admin page shows, and money,
account numbers and ids written as the bank writes them."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django import template
from django.conf import settings
from django.utils.html import format_html

register = template.Library()
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


@register.filter
def money(value: Any, currency: str = "") -> str:
    """``{{ account.posted|money:account.currency }}`` → "10,000.00 CNY"."""
    return amount_text(value, currency)


@register.filter
def signed_money(value: Any, currency: str = "") -> str:
    """An amount in or out of an account: "+100.00 CNY", "-100.00 CNY"."""
    return amount_text(value, currency, signed=True)


def grouped_number(number: Any) -> str:
    """An account number in groups of four for reading ("0100 0000 0045 10"); what is not one,
    as it is."""
    text = str(number or "")
    if len(text) != 14 or not text.isdigit():
        return text
    return NBSP.join(text[i : i + 4] for i in range(0, len(text), 4))


@register.filter
def account_no(number: Any) -> str:
    return grouped_number(number)


@register.filter
def short_id(value: Any) -> str:
    """A transfer's id as people read it out: its first eight hex digits in two groups."""
    text = str(value or "").replace("-", "")[:8]
    return f"{text[:4]}{NBSP}{text[4:]}" if len(text) == 8 else text


GROUPABLE = re.compile(r"(?<![\d.,])(\d{14}|\d{4,}\.\d{2})(?![\d.,])")


@register.filter
def in_words(text: Any) -> str:
    """A service's message with its amounts grouped and its account numbers split for reading."""

    def group(match: re.Match[str]) -> str:
        found = match.group(1)
        return grouped_number(found) if "." not in found else amount_text(found)

    return GROUPABLE.sub(group, str(text))


@register.filter
def local_time(value: Any) -> str:
    """A moment in the back office's time zone, with the zone said: "2026-12-07 18:02 +0800"."""
    if not value:
        return "—"
    from django.utils import timezone

    return f"{timezone.localtime(value):%Y-%m-%d %H:%M %z}"


@register.simple_tag
def status_badge(label: str, tone: str = "") -> str:
    return format_html('<span class="bo-badge bo-badge-{}">{}</span>', tone or "neutral", label)


@register.simple_tag
def bankcore_environment() -> str:
    return str(settings.BANKCORE_ENVIRONMENT)


@register.simple_tag
def bankcore_is_production() -> bool:
    return str(settings.BANKCORE_ENVIRONMENT).lower() in {"production", "prod"}


@register.simple_tag
def backoffice_counts(user: Any) -> dict[str, int]:
    """What waits for this user: requests to approve (not their own), transfers stuck past deadline."""
    from transfers.admin import own_requests_count, pending_approvals_count, stuck_transfers

    counts = {"approvals": 0, "stuck": 0, "own": 0}
    if user.has_perm("transfers.approve_approval") or user.has_perm("transfers.view_approval"):
        counts["approvals"] = pending_approvals_count(user)
        counts["own"] = own_requests_count(user)
    if user.has_perm("transfers.view_transfer"):
        counts["stuck"] = stuck_transfers().count()
    return counts


@register.filter
def error_lines(errors: Any) -> list[tuple[str, str]]:
    """A field's errors as (words, code): the code of a service's refusal, kept small beside its
    words for whoever reports it; none for the form's own checks."""
    lines: list[tuple[str, str]] = []
    for error in errors.as_data() if errors else []:
        shown = (error.params or {}).get("shown_code", "") if isinstance(error.params, dict) else ""
        lines.extend((in_words(text), shown) for text in error)
    return lines
