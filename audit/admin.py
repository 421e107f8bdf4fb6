"""The audit trail, read-only: for auditors (and anyone granted ``audit.view_auditevent``).

Nobody adds, changes or deletes audit events through the app; the queryset itself refuses bulk
updates and deletes (``AuditEventQuerySet``) and the model refuses a second save.

People read it: what happened in words (its code kept beside them, in the page and as the list's
tooltip), who did it by name, through which channel in words, and every time with its zone
(``bankcore/formats``).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from audit.models import AuditChainHead, AuditEvent
from bankcore.actors import CHANNEL_WORDS

PERSON_KEYS = ("maker", "checker", "created_by", "user", "actor")

# What an event's code means. A code not listed is read from its parts ("books.checked": "Books
# checked"); "….refused" is what was refused.
ACTION_WORDS = {
    "account.opened": "Account opened",
    "account.frozen": "Account frozen",
    "account.unfrozen": "Account unfrozen",
    "account.closed": "Account closed",
    "transfer.completed": "Money moved",
    "transfer.aborted": "Transfer not made",
    "approval.requested": "Approval asked for",
    "approval.approved": "Request approved",
    "approval.rejected": "Request rejected",
    "approval.executed": "Request carried out",
    "approval.failed": "Request failed when carried out",
    "approval.withdrawn": "Request withdrawn by its maker",
    "approval.expired": "Request expired",
    "recovery.run": "Recovery run",
    "books.checked": "Books and audit trail checked",
    "backoffice": "open a back-office page",
    "approval.approve": "approve a request",
    "approval.reject": "reject a request",
    "approval.execute": "carry out a request",
    "approval.withdraw": "withdraw a request",
    "user.logged_in": "Signed in",
    "user.logged_out": "Signed out",
    "user.login_failed": "Sign-in refused",
    "staff.created": "Staff member added",
    "partner.created": "Partner added",
    "partner.linked": "Partner given an account",
    "partner.unlinked": "Partner's account taken away",
    "partner.password_rotated": "Partner's password changed",
    "partner.activated": "Partner let in again",
    "partner.deactivated": "Partner shut out",
}


def action_words(code: str) -> str:
    """An event's code as people read it."""
    if code in ACTION_WORDS:
        return ACTION_WORDS[code]
    if code.endswith(".refused"):
        return f"Refused: {action_words(code.removesuffix('.refused'))}"
    return code.replace(".", " ").replace("_", " ").capitalize()


def _name(user: Any) -> str:
    return (user.get_full_name() or user.get_username()) if user is not None else ""


def _people_named(changes: Any) -> list[tuple[str, int, str]]:
    """(key, id, name) of the users a change names by id."""
    if not isinstance(changes, dict):
        return []
    ids = {key: changes[key] for key in PERSON_KEYS if isinstance(changes.get(key), int)}
    if not ids:
        return []
    users = get_user_model().objects.in_bulk(set(ids.values()))
    return [(key, pk, _name(users.get(pk)) or "unknown user") for key, pk in ids.items()]


class ActionFilter(admin.SimpleListFilter):
    """What happened, in words; the codes the trail holds."""

    title = "what happened"
    parameter_name = "action"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        codes = AuditEvent.objects.order_by("action").values_list("action", flat=True).distinct()
        return sorted(((code, action_words(code)) for code in codes), key=lambda choice: choice[1])

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(action=self.value()) if self.value() else queryset


class ChannelFilter(admin.SimpleListFilter):
    title = "channel"
    parameter_name = "channel"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(CHANNEL_WORDS.items())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(channel=self.value()) if self.value() else queryset


class ActorFilter(admin.RelatedOnlyFieldListFilter):
    """The people who acted, by name."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        choices = super().field_choices(field, request, model_admin)
        users = get_user_model().objects.in_bulk([pk for pk, _ in choices])
        named = [(str(pk), _name(users.get(pk)) or str(label)) for pk, label in choices]
        return sorted(named, key=lambda choice: choice[1])


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "created_at",
        "actor_display",
        "channel_display",
        "what_happened",
        "object_type",
        "object_id",
        "ip",
        "sealed",
    )
    list_filter = (ChannelFilter, ActionFilter, "object_type", ("actor", ActorFilter), "created_at")
    list_select_related = ("actor",)
    search_fields = ("object_id", "request_id", "actor_name", "action")
    ordering = ("-id",)
    list_per_page = 50
    show_full_result_count = False
    fields = (
        "id",
        "created_at",
        "actor_display",
        "actor_name",
        "channel_display",
        "ip",
        "request_id",
        "what_happened",
        "action",
        "object_type",
        "object_id",
        "ledger",
        "changes_pretty",
        "seq",
        "prev_hash",
        "hash",
    )
    readonly_fields = fields

    @admin.display(description="who", ordering="actor_name")
    def actor_display(self, obj: AuditEvent) -> Any:
        """The person by name, their login as the tooltip; who is no user (the system, a task,
        a partner gone since), as recorded."""
        if obj.actor is None:
            return obj.actor_name
        return format_html('<span title="{}">{}</span>', obj.actor_name, _name(obj.actor))

    @admin.display(description="channel", ordering="channel")
    def channel_display(self, obj: AuditEvent) -> str:
        return CHANNEL_WORDS.get(obj.channel, obj.channel)

    @admin.display(description="what happened", ordering="action")
    def what_happened(self, obj: AuditEvent) -> Any:
        return format_html('<span title="{}" class="bo-action">{}</span>', obj.action, action_words(obj.action))

    @admin.display(boolean=True, description="sealed")
    def sealed(self, obj: AuditEvent) -> bool:
        return obj.seq is not None

    @admin.display(description="what changed")
    def changes_pretty(self, obj: AuditEvent) -> Any:
        """The event's changes as recorded, with the people its ids name written beside them."""
        text = json.dumps(obj.changes, indent=2, ensure_ascii=False, sort_keys=True)
        people = _people_named(obj.changes)
        if people:
            text += "\n\n" + "\n".join(f"{key} {pk}: {name}" for key, pk, name in people)
        return format_html("<pre>{}</pre>", text)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # The last verification of the hash chain, above the list.
        context = {"chain_head": AuditChainHead.objects.filter(pk=1).first(), **(extra_context or {})}
        return super().changelist_view(request, context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
