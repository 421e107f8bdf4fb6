"""Per-client throttling for the partner API, counted in the default cache (Redis whenever
``REDIS_HOST`` is set, so every replica shares one count).

DRF's own classes copy the rates once, at import; these read them at each request, so a changed
setting (and a test's ``override_settings``) takes effect.
"""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


class PartnerRateThrottle(UserRateThrottle):
    """An authenticated client by its user id; an anonymous one by its address."""

    def get_rate(self) -> str | None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(str(self.scope))
        return None if rate is None else str(rate)


class AnonymousRateThrottle(AnonRateThrottle):
    """Anonymous requests only (the token endpoint), by address."""

    def get_rate(self) -> str | None:
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(str(self.scope))
        return None if rate is None else str(rate)
