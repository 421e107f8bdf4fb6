"""Four eyes, the steps every decision on a request shares: finding and locking it, checking who
decides, and recording what was decided (``audit.services``). The single requests'
services (``transfers.approvals``), the bulk batches' (``transfers.bulk``) and expiry
(``transfers.approval_holds``) decide through these.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib.auth import get_user_model

from audit.services import audit_event_record, audit_refusal_record
from bankcore.actors import Actor
from transfers.approval_rules import is_checker
from transfers.errors import (
    ApprovalNotAllowed,
    ApprovalNotFound,
    ApprovalNotMaker,
    ApprovalNotPending,
    ApprovalSelfApproval,
)
from transfers.models import Approval

Status = Approval.Status


def approval_event_record(approval: Approval, actor: Actor, action: str, **extra: object) -> None:
    """The audit event ``action`` of ``approval``: what it moves, and ``extra``."""
    audit_event_record(
        actor=actor,
        action=action,
        object_type="approval",
        object_id=str(approval.pk),
        changes={
            "kind": approval.kind,
            "source": approval.source_account,
            "destination": approval.destination_account,
            "amount": str(approval.amount),
            "currency": approval.currency,
            "reference": approval.reference,
            "maker": approval.maker_id,
            **extra,
        },
    )


def approval_pk(approval_id: object) -> int:
    """The key ``approval_id`` names; ``ApprovalNotFound`` when it names none."""
    try:
        return int(str(approval_id))
    except ValueError:
        raise ApprovalNotFound(f"No approval {approval_id}.") from None


def approval_get(*, approval_id: object) -> Approval:
    """The request ``approval_id`` names, with its maker; ``ApprovalNotFound`` when it names none."""
    approval = Approval.objects.filter(pk=approval_pk(approval_id)).select_related("maker").first()
    if approval is None:
        raise ApprovalNotFound(f"No approval {approval_id}.")
    return approval


def approval_lock(approval_id: object) -> Approval:
    """The request ``approval_id`` names, locked until the transaction ends (``ApprovalNotFound``)."""
    approval = Approval.objects.select_for_update().filter(pk=approval_pk(approval_id)).first()
    if approval is None:
        raise ApprovalNotFound(f"No approval {approval_id}.")
    return approval


def decision_check(actor: Actor, approval: Approval, *, verb: str) -> None:
    """A PENDING request (``ApprovalNotPending``) that ``actor`` may ``verb`` (``checker_check``)."""
    if approval.status != Status.PENDING:
        raise ApprovalNotPending(f"This request is already {approval.get_status_display().lower()}.")
    checker_check(actor, approval, verb=verb)


def checker_check(actor: Actor, approval: Approval, *, verb: str) -> None:
    """An active supervisor other than the maker: ``ApprovalSelfApproval``, ``ApprovalNotAllowed``."""
    if actor.user_id is not None and actor.user_id == approval.maker_id:
        raise ApprovalSelfApproval(f"You made this request; another supervisor must {verb} it.")
    checker = get_user_model().objects.filter(pk=actor.user_id, is_active=True).first() if actor.user_id else None
    if checker is None or not is_checker(checker):
        raise ApprovalNotAllowed(f"Only a supervisor may {verb} requests.")


# The refusals that say who may decide: each is an audit event of its own (who tried, what, why).
STAFF_REFUSALS = (ApprovalSelfApproval, ApprovalNotAllowed, ApprovalNotMaker)


F = TypeVar("F", bound=Callable[..., Any])


def refusals_recorded(verb: str) -> Callable[[F], F]:
    """A decision service whose staff refusals (``STAFF_REFUSALS``) are recorded in the audit
    trail, after its transaction rolled back (``audit_refusal_record``), once: approving runs the
    execution's check too."""

    def wrap(service: F) -> F:
        @functools.wraps(service)
        def recorded(*, actor: Actor, approval_id: object, **kwargs: Any) -> Any:
            try:
                return service(actor=actor, approval_id=approval_id, **kwargs)
            except STAFF_REFUSALS as refused:
                if not getattr(refused, "recorded", False):
                    setattr(refused, "recorded", True)  # noqa: B010 (an attribute of this instance only)
                    audit_refusal_record(
                        actor=actor,
                        action=f"approval.{verb}",
                        object_type="approval",
                        object_id=str(approval_id)[:64],
                        code=refused.code,
                    )
                raise

        return recorded  # type: ignore[return-value]

    return wrap
