"""The back office's roles as groups with explicit permissions (control plane, ``default``).

- teller: find accounts, open accounts, cash deposits and withdrawals, transfers.
- supervisor: all a teller may, plus approve or reject, freeze, unfreeze, close, reverse, run recovery.
- auditor: read everything, change nothing.

Permissions are listed one by one (never "all of app X"), so a new model or permission never widens
a role by itself. ``roles_sync`` makes the groups say exactly this; the migration
``audit.0003_roles`` runs it on install and ``manage.py sync_roles`` after a change here.
Superusers are for administration only: they are in no role, and ``role_permits`` — what every
door asks before money moves or an account changes — ignores their blanket permissions.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps as django_apps

# (app label, model, codename, name)
Perm = tuple[str, str, str, str]

# What every role reads: the accounts, their statements, transfers and what waits for approval.
READ_MONEY: list[Perm] = [
    ("accounts", "account", "view_account", "Can view account"),
    ("accounts", "entry", "view_entry", "Can view entry"),
    ("transfers", "transfer", "view_transfer", "Can view transfer"),
    ("transfers", "approval", "view_approval", "Can view approval"),
]
TELLER: list[Perm] = [
    *READ_MONEY,
    ("accounts", "account", "add_account", "Can add account"),
    ("accounts", "account", "handle_cash", "Can book cash deposits and withdrawals"),
    ("transfers", "transfer", "add_transfer", "Can add transfer"),
]
SUPERVISOR: list[Perm] = [
    *TELLER,
    ("accounts", "account", "freeze_account", "Can freeze and unfreeze accounts"),
    ("accounts", "account", "close_account", "Can close accounts"),
    ("transfers", "approval", "approve_approval", "Can approve or reject what waits for a second pair of eyes"),
    ("transfers", "approval", "reverse_transfer", "Can reverse a completed transfer"),
    ("transfers", "approval", "run_recovery", "Can run recovery on stuck transfers"),
    ("transfers", "reconciliationrun", "view_reconciliationrun", "Can view reconciliation run"),
]
AUDITOR: list[Perm] = [
    *READ_MONEY,
    ("transfers", "reconciliationrun", "view_reconciliationrun", "Can view reconciliation run"),
    ("audit", "auditevent", "view_auditevent", "Can view audit event"),
    ("auditlog", "logentry", "view_logentry", "Can view log entry"),
    ("auth", "user", "view_user", "Can view user"),
    ("auth", "group", "view_group", "Can view group"),
]
ROLES: dict[str, list[Perm]] = {"teller": TELLER, "supervisor": SUPERVISOR, "auditor": AUDITOR}

# What lets a user move money out of any account: a role's. A partner holds neither; it debits only
# the accounts linked to it.
STAFF_MOVEMENT_PERMISSIONS = ("transfers.add_transfer", "accounts.handle_cash")

SUPERUSER_WITHOUT_ROLE = (
    "Superusers are for administration (users, groups) only: moving money and changing accounts "
    "need a teller's or supervisor's login."
)


def role_permits(user: Any, *perms: str) -> bool:
    """Whether ``user`` (active) holds every permission named through its groups or its own grants.
    A superuser's blanket permissions do not count: superusers administer, they move no money and
    change no account, unless a role says so."""
    if not user.is_active:
        return False
    if not user.is_superuser:
        return bool(user.has_perms(perms))
    from django.contrib.auth.models import Permission
    from django.db.models import Q

    granted = {
        f"{app_label}.{codename}"
        for app_label, codename in Permission.objects.filter(Q(user=user) | Q(group__user=user)).values_list(
            "content_type__app_label", "codename"
        )
    }
    return all(perm in granted for perm in perms)


def acts_for_bank(user: Any) -> bool:
    """Staff: flagged ``is_staff`` or holding a permission to move money out of any account. They
    act on the bank's authority, which is what four eyes control; a partner (neither) acts on its
    customers' authority, on the accounts linked to it."""
    return bool(user.is_staff or any(user.has_perm(perm) for perm in STAFF_MOVEMENT_PERMISSIONS))


def may_use_partner_api(user: Any) -> bool:
    """simplejwt's ``USER_AUTHENTICATION_RULE``: the partner API is for partners only, an active
    user that is not staff, not a superuser and holds no permission at all (a partner's authority
    is its account links, ``PartnerAccountLink``; any permission is the back office's). Staff work
    in the back office, where four eyes and the roles apply; an API token would be a second door
    around them."""
    return bool(
        user is not None
        and user.is_active
        and not user.is_staff
        and not user.is_superuser
        and not user.get_all_permissions()
    )


def roles_sync(*, apps: Any = django_apps, using: str = "default") -> None:
    """Create the role groups (and any permission not created yet: Django creates them only after
    all migrations) and set each group's permissions to exactly its list. Idempotent. ``apps`` is
    the migration's historical registry when called from a migration."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    for role, permissions in ROLES.items():
        group, _ = Group.objects.using(using).get_or_create(name=role)
        granted = []
        for app_label, model, codename, name in permissions:
            content_type, _ = ContentType.objects.using(using).get_or_create(app_label=app_label, model=model)
            permission, _ = Permission.objects.using(using).get_or_create(
                content_type=content_type, codename=codename, defaults={"name": name}
            )
            granted.append(permission)
        group.permissions.set(granted)
