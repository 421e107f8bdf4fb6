"""What waits in the back office, for its front page and the stuck transfers' page (``{% load transfers_queue %}``)."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.simple_tag
def backoffice_counts(user: Any) -> dict[str, int]:
    """What waits for this user: requests to approve (not their own), transfers stuck past deadline."""
    from transfers.admin import stuck_transfers
    from transfers.admin_approvals import own_requests_count, pending_approvals_count

    counts = {"approvals": 0, "stuck": 0, "own": 0}
    if user.has_perm("transfers.approve_approval") or user.has_perm("transfers.view_approval"):
        counts["approvals"] = pending_approvals_count(user)
        counts["own"] = own_requests_count(user)
    if user.has_perm("transfers.view_transfer"):
        counts["stuck"] = stuck_transfers().count()
    return counts


@register.filter
def stuck_state(transfer: Any) -> SafeString:
    """A stuck transfer's status in words, its engine code as the tooltip."""
    from transfers.admin import STUCK_WORDS

    words = STUCK_WORDS.get(transfer.status, transfer.get_status_display())
    return format_html('<span title="{}">{}</span>', transfer.status, words)
