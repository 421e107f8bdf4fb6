"""Partner API routes, under /api/: version 1 (the apps' routes in ``accounts.api_urls`` and
``transfers.api_urls``), the OpenAPI schema and its Swagger UI."""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern, URLResolver, include, path, re_path
from drf_spectacular.utils import extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenBlacklistView, TokenObtainPairView, TokenRefreshView

from bankcore.api.authentication import (
    PartnerTokenBlacklistSerializer,
    PartnerTokenObtainPairSerializer,
    PartnerTokenRefreshSerializer,
    TokenPairOutput,
    TokenRefreshOutput,
)
from bankcore.api.problems import api_not_found
from bankcore.api.schema import problems
from bankcore.api.throttling import AnonymousRateThrottle


@extend_schema_view(
    post=extend_schema(
        operation_id="auth_token_create",
        request=PartnerTokenObtainPairSerializer,
        responses={200: TokenPairOutput},
        extensions=problems({401: ["invalid_credentials"], 429: ["login_locked"]}),
        description=(
            "A short-lived access token and a refresh token for a partner's username and password "
            "(bank staff get none: 401 `invalid_credentials`). After `AXES_FAILURE_LIMIT` failed logins "
            "for one username from one address, that pair is locked for the cool-off: 429 "
            "`login_locked`, with `Retry-After`."
        ),
    )
)
class TokenApi(TokenObtainPairView):
    serializer_class = PartnerTokenObtainPairSerializer
    throttle_classes = [AnonymousRateThrottle]


@extend_schema_view(
    post=extend_schema(
        operation_id="auth_token_refresh",
        request=PartnerTokenRefreshSerializer,
        responses={200: TokenRefreshOutput},
        description=(
            "A new access token and a new refresh token for a valid refresh token, which is then "
            "blacklisted: each refresh token is used once."
        ),
    )
)
class TokenRefreshApi(TokenRefreshView):
    serializer_class = PartnerTokenRefreshSerializer
    throttle_classes = [AnonymousRateThrottle]


@extend_schema_view(
    post=extend_schema(
        operation_id="auth_token_revoke",
        responses={204: None},
        description="Log out: the refresh token is blacklisted (access tokens live out their few minutes).",
    )
)
class TokenRevokeApi(TokenBlacklistView):
    serializer_class = PartnerTokenBlacklistSerializer
    throttle_classes = [AnonymousRateThrottle]

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        super().post(request, *args, **kwargs)
        return Response(status=204)


v1: list[URLPattern | URLResolver] = [
    path("auth/token/", TokenApi.as_view(), name="token"),
    path("auth/token/refresh/", TokenRefreshApi.as_view(), name="token-refresh"),
    path("auth/token/revoke/", TokenRevokeApi.as_view(), name="token-revoke"),
    # Each app owns its routes; named by string, so the kernel imports no app.
    path("", include("accounts.api_urls")),
    path("", include("transfers.api_urls")),
]


class _ProblemsInJSON(APIView):
    """drf-spectacular's views render with their own renderers, YAML (the schema) or an HTML
    template (the docs), errors included: a 405 or 406 came as YAML or as the text "405 Method Not
    Allowed", labelled application/problem+json. Their problems are JSON, as every other view's."""

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        if getattr(response, "exception", False) and isinstance(response, Response):
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        return response


class SchemaApi(_ProblemsInJSON, SpectacularAPIView):
    pass


class SchemaDocsApi(_ProblemsInJSON, SpectacularSwaggerView):
    pass


app_name = "api"
urlpatterns = [
    path("v1/", include((v1, "v1"))),
    path("schema/", SchemaApi.as_view(), name="schema"),
    path("docs/", SchemaDocsApi.as_view(url_name="api:schema"), name="docs"),
    # Anything else under /api/ is a problem+json 404, never an HTML page or a slash redirect.
    re_path(r"^.*$", api_not_found),
]
