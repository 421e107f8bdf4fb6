"""Reads for the partner API: which transfers a client may see, and may reverse.

A partner sees the transfers it created and those touching an account linked to it; any other
transfer answers exactly as a missing one. Staff with ``transfers.view_transfer`` see every one.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from accounts.api_selectors import account_may_debit, account_numbers_linked
from audit.roles import acts_for_bank, role_permits
from transfers.approval_rules import role_check
from transfers.errors import ReversalForbidden, TransferNotFound
from transfers.models import Transfer

VIEW_ALL_TRANSFERS_PERMISSION = "transfers.view_transfer"
REVERSE_PERMISSION = "transfers.reverse_transfer"


def transfers_visible(*, user: Any) -> QuerySet[Transfer]:
    qs = Transfer.objects.using("default").all()
    if user.has_perm(VIEW_ALL_TRANSFERS_PERMISSION):
        return qs
    linked = account_numbers_linked(user=user)
    return qs.filter(Q(created_by=user) | Q(source_account__in=linked) | Q(destination_account__in=linked))


def transfer_get_visible(*, user: Any, transfer_id: uuid.UUID) -> Transfer:
    """The transfer, if ``user`` may see it; raises ``TransferNotFound`` otherwise."""
    transfer = transfers_visible(user=user).filter(pk=transfer_id).first()
    if transfer is None:
        raise TransferNotFound(f"No transfer {transfer_id}.")
    return transfer


def transfers_list(
    *,
    user: Any,
    account: str | None = None,
    status: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> QuerySet[Transfer]:
    """The transfers ``user`` may see, newest first; ``account`` matches either side,
    ``created_from`` is inclusive and ``created_to`` exclusive."""
    qs = transfers_visible(user=user)
    if account is not None:
        qs = qs.filter(Q(source_account=account) | Q(destination_account=account))
    if status is not None:
        qs = qs.filter(status=status)
    if created_from is not None:
        qs = qs.filter(created_at__gte=created_from)
    if created_to is not None:
        qs = qs.filter(created_at__lt=created_to)
    return qs.order_by("-created_at", "-id")


def transfer_reversal_check(*, user: Any, transfer: Transfer) -> None:
    """Refuse unless ``user`` may reverse ``transfer``: with ``transfers.reverse_transfer`` held
    through a role (a supervisor, as in the back office), any transfer; other staff
    (``audit.roles.acts_for_bank``) none — a teller gets ``ReversalForbidden``, a superuser outside
    the roles ``RoleRequired``; a partner, one whose destination it may debit (``ReversalForbidden``)."""
    if role_permits(user, REVERSE_PERMISSION):
        return
    if acts_for_bank(user):
        role_check(user=user, permission=REVERSE_PERMISSION)
        raise ReversalForbidden("Reversing a transfer takes a supervisor; ask one to reverse it in the back office.")
    if not account_may_debit(user=user, number=transfer.destination_account):
        raise ReversalForbidden("Only who may debit the destination account may reverse a transfer.")


# How long a replay waits for the first request with its key to finish, when both are in flight.
REPLAY_WAIT_SECONDS = 5.0
_REPLAY_POLL_SECONDS = 0.02


def transfer_wait_final(*, transfer: Transfer, timeout: float = REPLAY_WAIT_SECONDS) -> Transfer:
    """The transfer once it is COMPLETED or ABORTED, or as it stands after ``timeout`` seconds.
    A replay that races its original finds the transfer still PENDING; waiting a moment lets it
    answer with the same outcome instead of a 202 the client would have to poll."""
    deadline = time.monotonic() + timeout
    current = transfer
    while not current.is_final and time.monotonic() < deadline:
        time.sleep(_REPLAY_POLL_SECONDS)
        current = Transfer.objects.using("default").get(pk=transfer.pk)
    current.replayed = transfer.replayed
    return current
