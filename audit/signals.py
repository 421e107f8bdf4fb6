"""Sign-ins to the back office in the audit trail: a login, a logout and a failed login are
events like any state change (who, from where, which request). API clients authenticate with JWTs
and do not pass here; their token requests are in the audit file (``audit.middleware``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from audit.services import audit_event_record
from bankcore.actors import Actor, Channel, client_ip
from bankcore.paths import is_api_request


def _actor(request: Any, *, user: Any = None, username: str = "") -> Actor:
    """Who signed in (or tried to), from where, in which request. Not ``actor_from_request``:
    ``request.user`` is not set yet at login (the test client's login() sends a bare request)."""
    channel = Channel.API if is_api_request(request) else Channel.ADMIN
    request_id = getattr(request, "request_id", None)
    if user is not None:
        return Actor.for_user(user, channel=channel, ip=client_ip(request), request_id=request_id)
    if request_id:
        return Actor(channel=channel, username=username, ip=client_ip(request), request_id=request_id)
    return Actor(channel=channel, username=username, ip=client_ip(request))


@receiver(user_logged_in, dispatch_uid="audit_user_logged_in")
def _logged_in(sender: Any, request: Any, user: Any, **_: Any) -> None:
    if request is not None:
        audit_event_record(
            actor=_actor(request, user=user), action="user.logged_in", object_type="user", object_id=str(user.pk)
        )


@receiver(user_logged_out, dispatch_uid="audit_user_logged_out")
def _logged_out(sender: Any, request: Any, user: Any, **_: Any) -> None:
    if request is not None and user is not None:
        audit_event_record(
            actor=_actor(request, user=user), action="user.logged_out", object_type="user", object_id=str(user.pk)
        )


@receiver(user_login_failed, dispatch_uid="audit_user_login_failed")
def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **_: Any) -> None:
    if request is None:
        return  # authenticate() called by code, not by someone at a login form
    username = str(credentials.get("username", ""))[:150]
    audit_event_record(
        actor=_actor(request, username=username),
        action="user.login_failed",
        object_type="user",
        object_id="",
        changes={"username": username},
    )
