"""Partners and staff: the people and systems that log in (control plane, ``default``).

A **partner** is a system calling the Partner API on its customers' behalf: a user that is not
staff, holds no role and no permission, and may see and debit only the accounts linked to it
(``PartnerAccountLink``). A **staff** member logs in to the back office in exactly one role
(``audit.roles``: teller, supervisor, auditor). Each is made here, and only here, whether from a
management command or the admin page; every change is an audit event in the same transaction.

A partner's password is its API credential. It is generated (never chosen), returned once to be
handed over, and only its hash is kept: rotating it sets a new one, and the tokens issued before
stop working (``bankcore.api.authentication`` checks the revoke claim on every request). A deactivated partner
is refused on its next request; its links stay, for the record.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.errors import AccountClosed, InternalAccount
from accounts.models import Account, PartnerAccountLink
from accounts.selectors import account_get
from audit.roles import ROLES, roles_sync
from audit.services import audit_event_record
from bankcore.actors import Actor
from bankcore.errors import Conflict, NotFound, ValidationFailed

# Long enough that guessing is hopeless; URL-safe so it survives any client's configuration file.
PARTNER_PASSWORD_BYTES = 24


class InvalidUsername(ValidationFailed):
    code = "invalid_username"
    title = "Invalid user name"


class UsernameTaken(Conflict):
    code = "username_taken"
    title = "User name already taken"


class UnknownRole(ValidationFailed):
    code = "unknown_role"
    title = "Unknown role"


class WeakPassword(ValidationFailed):
    code = "weak_password"
    title = "Password refused"


class PartnerNotFound(NotFound):
    code = "partner_not_found"
    title = "Partner not found"


class NotAPartner(ValidationFailed):
    code = "not_a_partner"
    title = "Not a partner"


@dataclass(frozen=True)
class Credential:
    """A partner's user name and its new password: shown once, never stored in clear."""

    username: str
    password: str


def _username_check(username: str) -> str:
    User = get_user_model()
    username = username.strip()
    try:
        User.username_validator(username)
    except ValidationError as exc:
        raise InvalidUsername(f"{username!r}: {' '.join(exc.messages)}") from None
    if not username or len(username) > (User._meta.get_field("username").max_length or 150):
        raise InvalidUsername(f"{username!r} is empty or too long")
    if User.objects.filter(username__iexact=username).exists():
        raise UsernameTaken(f"A user {username!r} exists already.")
    return username


def is_partner(user: Any) -> bool:
    """Not staff, no superuser, in no group and with no permission of its own."""
    return not (user.is_staff or user.is_superuser or user.groups.exists() or user.user_permissions.exists())


def partner_get(*, username: str) -> Any:
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise PartnerNotFound(f"No partner {username!r}.")
    if not is_partner(user):
        raise NotAPartner(f"{username!r} is staff (a role, a permission or a superuser), not a partner.")
    return user


def staff_create(*, actor: Actor, username: str, role: str, password: str, email: str = "") -> Any:
    """A back-office user in ``role``, able to log in to the admin. Refused, nothing created:
    an unknown role, a taken or malformed user name, a password the validators refuse."""
    if role not in ROLES:
        raise UnknownRole(f"{role!r} is not a role; the roles are {', '.join(ROLES)}.")
    username = _username_check(username)
    User = get_user_model()
    try:
        validate_password(password, User(username=username, email=email))
    except ValidationError as exc:
        raise WeakPassword(" ".join(exc.messages)) from None
    with transaction.atomic(using="default"):
        roles_sync()  # the groups exist after migrate; this also restores one deleted by hand
        user = User.objects.create_user(username=username, email=email, password=password, is_staff=True)
        user.groups.add(Group.objects.get(name=role))
        audit_event_record(
            actor=actor,
            action="staff.created",
            object_type="user",
            object_id=str(user.pk),
            changes={"username": username, "role": role},
        )
    return user


def partner_create(*, actor: Actor, username: str) -> Credential:
    """A new partner, linked to no account yet, with a generated password (returned once)."""
    username = _username_check(username)
    password = secrets.token_urlsafe(PARTNER_PASSWORD_BYTES)
    with transaction.atomic(using="default"):
        user = get_user_model().objects.create_user(username=username, password=password, is_staff=False)
        audit_event_record(
            actor=actor,
            action="partner.created",
            object_type="user",
            object_id=str(user.pk),
            changes={"username": username},
        )
    return Credential(username, password)


def partner_link_check(numbers: Iterable[str]) -> list[Account]:
    """The accounts a partner may be linked to, or the refusal of the first that may not be:
    malformed, unknown, internal or closed."""
    accounts: list[Account] = []
    for number in numbers:
        account = account_get(number=str(number).strip())
        if account.kind != Account.Kind.CUSTOMER:
            raise InternalAccount(f"{account.number} is an internal account; partners act for customers.")
        if account.status == Account.Status.CLOSED:
            raise AccountClosed(f"{account.number} is closed.")
        accounts.append(account)
    if not accounts:
        raise ValidationFailed("Name at least one account.")
    return accounts


def partner_link(*, actor: Actor, username: str, numbers: Iterable[str]) -> list[str]:
    """Link customer accounts to the partner; returns the numbers newly linked (one linked
    already is left as it is). Every number is checked before any is linked: a malformed or
    unknown number, an internal or a closed account refuses them all."""
    partner = partner_get(username=username)
    accounts = partner_link_check(numbers)
    linked: list[str] = []
    with transaction.atomic(using="default"):
        for account in accounts:
            _, created = PartnerAccountLink.objects.get_or_create(user=partner, account_number=account.number)
            if created:
                linked.append(str(account.number))
        if linked:
            audit_event_record(
                actor=actor,
                action="partner.linked",
                object_type="user",
                object_id=str(partner.pk),
                changes={"username": partner.username, "accounts": linked},
            )
    return linked


def partner_unlink(*, actor: Actor, username: str, numbers: Iterable[str]) -> list[str]:
    """Remove links; returns the numbers that were linked (others are ignored)."""
    partner = partner_get(username=username)
    wanted = [str(number).strip() for number in numbers]
    with transaction.atomic(using="default"):
        links = PartnerAccountLink.objects.filter(user=partner, account_number__in=wanted)
        removed = sorted(links.values_list("account_number", flat=True))
        links.delete()
        if removed:
            audit_event_record(
                actor=actor,
                action="partner.unlinked",
                object_type="user",
                object_id=str(partner.pk),
                changes={"username": partner.username, "accounts": removed},
            )
    return removed


def partner_rotate_password(*, actor: Actor, username: str) -> Credential:
    """A new generated password (returned once); tokens issued under the old one stop working."""
    partner = partner_get(username=username)
    password = secrets.token_urlsafe(PARTNER_PASSWORD_BYTES)
    with transaction.atomic(using="default"):
        partner.set_password(password)
        partner.save(update_fields=["password"])
        audit_event_record(
            actor=actor,
            action="partner.password_rotated",
            object_type="user",
            object_id=str(partner.pk),
            changes={"username": partner.username},
        )
    return Credential(partner.username, password)


def partner_set_active(*, actor: Actor, username: str, active: bool) -> bool:
    """Deactivate (or reactivate) a partner; returns whether anything changed."""
    partner = partner_get(username=username)
    if partner.is_active == active:
        return False
    with transaction.atomic(using="default"):
        partner.is_active = active
        partner.save(update_fields=["is_active"])
        audit_event_record(
            actor=actor,
            action="partner.activated" if active else "partner.deactivated",
            object_type="user",
            object_id=str(partner.pk),
            changes={"username": partner.username},
        )
    return True
