"""The back office's partner page: Partner API clients, their account links and credentials.

Registered from ``accounts.admin`` (one import). Everything goes through ``accounts.partners``:
creating a partner, linking and unlinking accounts, rotating the password (the new one is shown
once, on the answer to the POST, and never again), deactivating. Who may: user administration
(``auth.add_user`` to create, ``auth.change_user`` to rotate or deactivate) and the link's own
permissions (``accounts.add_partneraccountlink`` / ``delete_partneraccountlink``); no role holds
them, so by default only superusers (administrators) onboard partners.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from accounts.models import PartnerAccountLink
from accounts.partners import (
    is_partner,
    partner_create,
    partner_link,
    partner_link_check,
    partner_rotate_password,
    partner_set_active,
    partner_unlink,
)
from bankcore.actors import Actor, Channel, actor_from_request
from bankcore.errors import ApplicationError


def _actor(request: HttpRequest) -> Actor:
    return actor_from_request(request, channel=Channel.ADMIN)


def _require(request: HttpRequest, perm: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied


def partners_queryset() -> QuerySet[Any]:
    return (
        get_user_model()
        .objects.filter(is_staff=False, is_superuser=False, groups=None, user_permissions=None)
        .annotate(links=Count("account_links", distinct=True))
        .order_by("username")
    )


class PartnerLinkForm(forms.ModelForm):
    class Meta:
        model = PartnerAccountLink
        fields = ["user", "account_number"]
        labels = {"user": "Partner"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ModelChoiceField, self.fields["user"]).queryset = partners_queryset()  # a ForeignKey's field

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        number = data.get("account_number")
        if number:
            try:
                partner_link_check([number])
            except ApplicationError as exc:
                raise forms.ValidationError(f"{exc.detail} ({exc.code})") from None
        return data

    def validate_unique(self) -> None:  # an existing link is left as it is (partner_link)
        pass


class PartnerCreateForm(forms.Form):
    name = forms.CharField(max_length=150, help_text="The partner's user name (its API login).")


@admin.register(PartnerAccountLink)
class PartnerAccountLinkAdmin(admin.ModelAdmin):
    list_display = ["user", "account_number", "created_at"]
    list_filter = ["user"]
    search_fields = ["user__username", "account_number"]
    form = PartnerLinkForm
    change_list_template = "admin/accounts/partners/link_changelist.html"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a link is added or removed, never edited

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        partner_link(actor=_actor(request), username=obj.user.username, numbers=[obj.account_number])
        # The admin's log and redirect need the row.
        saved = PartnerAccountLink.objects.get(user=obj.user, account_number=obj.account_number)
        obj.pk, obj.created_at = saved.pk, saved.created_at

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        partner_unlink(actor=_actor(request), username=obj.user.username, numbers=[obj.account_number])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for link in queryset.select_related("user"):
            self.delete_model(request, link)

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("partners/", view(self.partners_view), name="accounts_partners"),
            path("partners/<int:pk>/rotate/", view(self.rotate_view), name="accounts_partner_rotate"),
            path("partners/<int:pk>/active/", view(self.active_view), name="accounts_partner_active"),
            *super().get_urls(),
        ]

    # --- Partners: list and create ----------------------------------------------------------

    def partners_view(self, request: HttpRequest) -> HttpResponse:
        _require(request, "auth.view_user")
        form = PartnerCreateForm(request.POST or None)
        if request.method == "POST":
            _require(request, "auth.add_user")
            if form.is_valid():
                try:
                    credential = partner_create(actor=_actor(request), username=form.cleaned_data["name"])
                except ApplicationError as exc:
                    form.add_error("name", f"{exc.detail} ({exc.code})")
                else:
                    return self._credential_page(request, credential, created=True)
        context = {
            **self.admin_site.each_context(request),
            "title": "Partners",
            "opts": self.model._meta,
            "partners": partners_queryset(),
            "form": form,
            "may_create": request.user.has_perm("auth.add_user"),
            "may_change": request.user.has_perm("auth.change_user"),
        }
        return TemplateResponse(request, "admin/accounts/partners/partners.html", context)

    def _credential_page(self, request: HttpRequest, credential: Any, *, created: bool) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": f"Credentials of {credential.username}",
            "opts": self.model._meta,
            "credential": credential,
            "created": created,
        }
        response = TemplateResponse(request, "admin/accounts/partners/credential.html", context)
        response["Cache-Control"] = "no-store"  # shown once: not kept by the browser either
        return response

    def _partner(self, pk: int) -> Any:
        user = get_user_model().objects.filter(pk=pk).first()
        if user is None or not is_partner(user):
            raise PermissionDenied("Not a partner.")
        return user

    def rotate_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        _require(request, "auth.change_user")
        partner = self._partner(pk)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:accounts_partners"))
        try:
            credential = partner_rotate_password(actor=_actor(request), username=partner.username)
        except ApplicationError as exc:
            messages.error(request, f"{exc.detail} ({exc.code})")
            return HttpResponseRedirect(reverse("admin:accounts_partners"))
        return self._credential_page(request, credential, created=False)

    def active_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        _require(request, "auth.change_user")
        partner = self._partner(pk)
        if request.method == "POST":
            active = request.POST.get("active") == "1"
            try:
                partner_set_active(actor=_actor(request), username=partner.username, active=active)
            except ApplicationError as exc:
                messages.error(request, f"{exc.detail} ({exc.code})")
            else:
                state = "reactivated" if active else "deactivated: its next API request is refused"
                messages.success(request, f"{partner.username} {state}.")
        return HttpResponseRedirect(reverse("admin:accounts_partners"))
