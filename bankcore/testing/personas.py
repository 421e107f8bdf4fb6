"""Who uses the bank in tests: partner API users and their clients, staff's password, and the API's
throttle rates a test may tighten."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.test import override_settings

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from rest_framework.test import APIClient

STAFF_PASSWORD = "correct-horse-battery-staple"


def api_user(username: str, *, permissions: tuple[str, ...] = (), links: tuple[str, ...] = ()) -> User:
    """A user of the partner API: ``links`` are the account numbers it may see and debit,
    ``permissions`` ("app_label.codename") what staff may do."""
    from django.contrib.auth.models import Permission, User

    from accounts.models import PartnerAccountLink

    user = User.objects.create_user(username=username, password="pw-" + username)
    for name in permissions:
        app_label, codename = name.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    for number in links:
        PartnerAccountLink.objects.create(user=user, account_number=number)
    return user


def api_client_for(user: User | None = None) -> APIClient:
    """A DRF test client, authenticated with a real JWT access token when ``user`` is given."""
    from rest_framework.test import APIClient
    from rest_framework_simplejwt.tokens import RefreshToken

    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


def rates(**rates: str) -> override_settings:
    """The API's throttle rates with ``rates`` ("scope": "count/period") in place of the settings'."""
    from django.conf import settings

    rest: dict[str, Any] = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {**rest["DEFAULT_THROTTLE_RATES"], **rates}
    return override_settings(REST_FRAMEWORK=rest)
