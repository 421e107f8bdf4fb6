"""The audit trail, read-only: for auditors (and anyone granted ``audit.view_auditevent``).

Nobody adds, changes or deletes audit events through the app; the queryset itself refuses bulk
updates and deletes (``AuditEventQuerySet``) and the model refuses a second save.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from audit.models import AuditChainHead, AuditEvent

PERSON_KEYS = ("maker", "checker", "created_by", "user", "actor")


def _people_named(changes: Any) -> list[tuple[str, int, str]]:
    """(key, id, name) of the users a change names by id."""
    if not isinstance(changes, dict):
        return []
    ids = {key: changes[key] for key in PERSON_KEYS if isinstance(changes.get(key), int)}
    if not ids:
        return []
    users = get_user_model().objects.in_bulk(set(ids.values()))
    return [
        (key, pk, (users[pk].get_full_name() or users[pk].get_username()) if pk in users else "unknown user")
        for key, pk in ids.items()
    ]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "actor_name", "channel", "action", "object_type", "object_id", "ip", "sealed")
    list_filter = ("channel", "action", "object_type", ("actor", admin.RelatedOnlyFieldListFilter), "created_at")
    search_fields = ("object_id", "request_id", "actor_name", "action")
    ordering = ("-id",)
    list_per_page = 50
    show_full_result_count = False
    fields = (
        "id",
        "created_at",
        "actor",
        "actor_name",
        "channel",
        "ip",
        "request_id",
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
