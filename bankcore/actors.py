"""Who is acting, and through which door. Every service that changes money or an account's state
takes an ``Actor`` so the audit trail can name who did it, when, and through which channel."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass, field
from typing import Any

from bankcore.logging import current_request_id


class Channel:
    ADMIN = "admin"
    API = "api"
    COMMAND = "command"
    TASK = "task"
    SYSTEM = "system"
    CHOICES = [(c, c) for c in (ADMIN, API, COMMAND, TASK, SYSTEM)]


# What a channel is, as the back office's pages say it.
CHANNEL_WORDS = {
    Channel.ADMIN: "back office",
    Channel.API: "partner system (API)",
    Channel.COMMAND: "operator command",
    Channel.TASK: "automatic task",
    Channel.SYSTEM: "the system",
}


def _request_id() -> str:
    """The id of the request or Celery task being handled (so audit events and log lines share
    it), or a fresh one outside of both (a management command)."""
    return current_request_id() or uuid.uuid4().hex


@dataclass(frozen=True)
class Actor:
    channel: str
    user_id: int | None = None
    username: str = ""
    ip: str | None = None
    request_id: str = field(default_factory=_request_id)

    @classmethod
    def system(cls, channel: str = Channel.SYSTEM, name: str = "system") -> Actor:
        return cls(channel=channel, username=name)

    @classmethod
    def for_user(cls, user: Any, *, channel: str, ip: str | None = None, request_id: str | None = None) -> Actor:
        return cls(
            channel=channel,
            user_id=user.pk,
            username=user.get_username(),
            ip=ip,
            request_id=request_id or _request_id(),
        )

    @property
    def client_id(self) -> str:
        """The idempotency namespace: keys of different clients never collide."""
        return f"user:{self.user_id}" if self.user_id is not None else f"{self.channel}:{self.username}"


IP_MAX_LENGTH = 39  # GenericIPAddressField's (an audit event's ip, auditlog's remote_addr)


def client_ip(request: Any) -> str | None:
    """The client's address: the peer's (REMOTE_ADDR), unless the peer is a proxy of
    ``TRUSTED_PROXIES`` (nginx), which passes the client in X-Real-IP (else the last address of
    X-Forwarded-For that is not itself a trusted proxy). A server reached directly gets whatever a
    client sends in those headers: from any other peer they are ignored, so a forged one neither
    picks a fresh throttle bucket or lockout counter nor lands in the audit trail. One answer for
    the audit trail, the API's throttles and django-axes (``AXES_CLIENT_IP_CALLABLE``). A header
    that is not an IP address is ignored too: the audit trail records an address, not text (a
    100-character header could not even be stored: a DataError, a 500)."""
    peer = _address(request.META.get("REMOTE_ADDR"))
    if peer is None or not _trusted_proxy(peer):
        return peer
    real = _address(request.META.get("HTTP_X_REAL_IP"))
    if real is not None:
        return real
    for hop in reversed(str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")):
        address = _address(hop)
        if address is None:
            break
        if not _trusted_proxy(address):
            return address
    return peer


def _address(given: object) -> str | None:
    if not isinstance(given, str) or not given.strip():
        return None
    try:
        ip = str(ipaddress.ip_address(given.strip()))
    except ValueError:
        return None
    return ip if len(ip) <= IP_MAX_LENGTH else None  # an IPv6 scope (fe80::1%<name>) can make it longer


def _trusted_proxy(address: str) -> bool:
    from django.conf import settings

    ip = ipaddress.ip_address(address)
    return any(ip in ipaddress.ip_network(network) for network in settings.TRUSTED_PROXIES)


def actor_from_request(request: Any, *, channel: str) -> Actor:
    """The actor of an authenticated request (admin or API), with its IP and request id."""
    return Actor.for_user(
        request.user, channel=channel, ip=client_ip(request), request_id=getattr(request, "request_id", None)
    )
