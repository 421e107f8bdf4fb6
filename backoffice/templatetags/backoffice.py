"""Template helpers of the back office: the environment banner every admin page shows, and money,
account numbers and ids written as the bank writes them."""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings

from backoffice import display

register = template.Library()

for _name in ("money", "signed_money", "account_no", "short_id", "in_words", "local_time"):
    register.filter(_name, getattr(display, _name))
register.simple_tag(display.status_badge, name="status_badge")


@register.simple_tag
def bankcore_environment() -> str:
    return str(settings.BANKCORE_ENVIRONMENT)


@register.simple_tag
def bankcore_is_production() -> bool:
    return str(settings.BANKCORE_ENVIRONMENT).lower() in {"production", "prod"}


@register.filter
def error_lines(errors: Any) -> list[tuple[str, str]]:
    """A field's errors as (words, code): the code of a service's refusal, kept small beside its
    words for whoever reports it; none for the form's own checks."""
    lines: list[tuple[str, str]] = []
    for error in errors.as_data() if errors else []:
        shown = (error.params or {}).get("shown_code", "") if isinstance(error.params, dict) else ""
        lines.extend((display.in_words(text), shown) for text in error)
    return lines
