"""What waits in the back office, for its front page (``{% load transfers_queue %}``)."""

from __future__ import annotations

from typing import Any

from django import template

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
