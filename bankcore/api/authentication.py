"""JWT authentication for the partner API: simplejwt's, with the partner rule.

simplejwt verifies the token's signature and expiry on every request. **The user is read with one
precompiled SQL statement** (``bankcore.fastpaths.jwt_user``), every concrete field of the user
model, built as the ORM would. ``is_active``, the revoke claim (a
  password change invalidates the tokens issued before it) and ``USER_AUTHENTICATION_RULE`` (the
  API is for partners: bank staff and superusers are refused, ``audit.roles.may_use_partner_api``)
  are checked on that row, on every request: a deactivated partner, or a user made staff, is
  refused on its next request, not when a cache expires.

And the token endpoints' rules: a refresh token is used once (it is blacklisted as it is exchanged
for a new pair, ``token_blacklist``'s tables in ``default``), ``auth/token/revoke/`` blacklists one
(a partner's logout), a refresh for a user deleted, deactivated or made staff since is a 401, and a
login that django-axes has locked is 429 ``login_locked`` with ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils.translation import gettext as _
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError
from rest_framework_simplejwt.serializers import (
    TokenBlacklistSerializer,
    TokenObtainPairSerializer,
    TokenRefreshSerializer,
)
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token
from rest_framework_simplejwt.utils import get_md5_hash_password

from bankcore.errors import ApplicationError
from bankcore.fastpaths import jwt_user


class PartnerJWTAuthentication(JWTAuthentication):
    def get_user(self, validated_token: Token) -> Any:
        try:
            user_id = validated_token[api_settings.USER_ID_CLAIM]
        except KeyError as error:
            raise InvalidToken(_("Token contained no recognizable user identification")) from error
        try:
            user = jwt_user(user_id)
        except (TypeError, ValueError) as error:
            raise InvalidToken(_("Token contained no recognizable user identification")) from error
        if user is None:
            raise AuthenticationFailed(_("User not found"), code="user_not_found")
        if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise AuthenticationFailed(_("User is inactive"), code="user_inactive")
        _check_revoke_claim(validated_token, user)
        if not api_settings.USER_AUTHENTICATION_RULE(user):
            raise AuthenticationFailed(_("The partner API is for partners; staff use the back office."), "not_partner")
        return user


def _check_revoke_claim(token: Token, user: Any) -> None:
    if api_settings.CHECK_REVOKE_TOKEN and token.get(api_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(
        user.password
    ):
        raise AuthenticationFailed(_("The user's password has been changed."), code="password_changed")


class _ExpiryInRange(Token):
    """simplejwt's expiry check, with an expiry no date can hold refused as invalid: a token signed
    with the key but with ``exp`` past year 9999 made ``datetime_from_epoch`` raise ValueError (not
    a TokenError), a 500. Only a holder of ``JWT_SECRET_KEY`` can sign one; still, a 401."""

    def check_exp(self, claim: str = "exp", current_time: Any = None) -> None:
        try:
            super().check_exp(claim, current_time)
        except (ValueError, OverflowError, OSError):
            raise TokenError(_("Token '%(claim)s' claim is not a time") % {"claim": claim}) from None


class PartnerAccessToken(_ExpiryInRange, AccessToken):
    """The access token the API accepts (``SIMPLE_JWT["AUTH_TOKEN_CLASSES"]``)."""


class PartnerRefreshToken(_ExpiryInRange, RefreshToken):  # type: ignore[misc]  # simplejwt: for_user of its two bases differs
    """The refresh token ``POST auth/token/refresh/`` accepts."""


class PartnerTokenRefreshSerializer(TokenRefreshSerializer):
    """simplejwt's refresh, with the refresh token used once: it is blacklisted in the same step
    that checks it was not (``get_or_create`` on the blacklist's unique row), so two requests
    with one token get one new pair between them. Its user must still exist and pass
    ``USER_AUTHENTICATION_RULE`` and the revoke claim: simplejwt's own refresh looked the user up
    with ``get``, and a deleted user was a 500."""

    token_class = PartnerRefreshToken

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        refresh = self.token_class(attrs["refresh"])  # signature, expiry, blacklist
        model = get_user_model()
        user_id = refresh.payload.get(api_settings.USER_ID_CLAIM)
        try:
            user = model.objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first() if user_id else None
        except (TypeError, ValueError):
            user = None
        if user is None or not api_settings.USER_AUTHENTICATION_RULE(user):
            raise AuthenticationFailed(_("No active account found for the given token."), "user_not_found")
        _check_revoke_claim(refresh, user)
        blacklisted: Any = refresh.blacklist()  # (row, created), whatever simplejwt's annotation says
        if not blacklisted[1]:
            raise InvalidToken(_("Token is blacklisted"))
        refresh.set_jti()
        refresh.set_exp()
        refresh.set_iat()
        refresh.outstand()
        return {"access": str(refresh.access_token), "refresh": str(refresh)}


class PartnerTokenBlacklistSerializer(TokenBlacklistSerializer):
    """``auth/token/revoke/``: the refresh token blacklisted (a token already revoked, expired or
    not ours is a 401 ``token_not_valid``, as for a refresh)."""

    token_class = PartnerRefreshToken


class LoginLocked(ApplicationError):
    code = "login_locked"
    title = "Too many failed logins"
    http_status = 429


class PartnerJWTScheme(SimpleJWTScheme):
    """The OpenAPI security scheme of simplejwt's class (``jwtAuth``, bearer JWT) for this one."""

    target_class = "bankcore.api.authentication.PartnerJWTAuthentication"


# simplejwt's serializer, with the username bounded by the user model's ``max_length``, as the
# admin's login form bounds it. A longer name is no user's; unbounded, it reached django-axes, whose
# record of the failed login could not store it (a DataError, a 500) — now it is 400
# ``validation_error`` on ``username`` before any lookup, and no attempt is recorded.
class PartnerTokenObtainPairSerializer(TokenObtainPairSerializer):
    """A partner's username and password."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        longest = getattr(get_user_model()._meta.get_field(self.username_field), "max_length", None)
        bound = {"max_length": longest} if longest else {}  # a field without one stays unbounded
        self.fields[self.username_field] = serializers.CharField(write_only=True, **bound)

    token_class = PartnerRefreshToken

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        try:
            return super().validate(attrs)
        except AuthenticationFailed:
            # django-axes marks the request when this name is locked from this address (the
            # failure that reached the limit, and every attempt during the cool-off, which each
            # restart it): a locked login is told so, and when to come back.
            if getattr(self.context.get("request"), "axes_locked_out", False):
                wait = int(settings.AXES_COOLOFF_TIME.total_seconds())
                raise LoginLocked(
                    f"Too many failed logins for this username from this address; retry in {wait} seconds.",
                    extra={"retry_after": wait},
                ) from None
            raise


class TokenPairOutput(serializers.Serializer[Any]):
    """What ``POST auth/token/`` answers (for the schema: simplejwt builds the dict itself)."""

    access = serializers.CharField(help_text="A JWT for `Authorization: Bearer …`, valid for minutes.")
    refresh = serializers.CharField(help_text="A JWT for `POST auth/token/refresh/`, valid for hours.")


class TokenRefreshOutput(serializers.Serializer[Any]):
    """What ``POST auth/token/refresh/`` answers."""

    access = serializers.CharField(help_text="A new access token.")
    refresh = serializers.CharField(help_text="A new refresh token; the one sent is blacklisted (used once).")
