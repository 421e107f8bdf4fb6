"""Login lockout (django-axes) for every login that comes over HTTP: the admin's login form and the
API's token endpoint both pass the request to ``authenticate``. Calls without a request (Django's
test client, scripts) cannot be brute-forced from outside and are left to the next backend, where
django-axes' own backend would refuse them outright."""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.contrib.auth.base_user import AbstractBaseUser


class LockoutBackend(AxesStandaloneBackend):
    def authenticate(
        self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> AbstractBaseUser | None:
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
