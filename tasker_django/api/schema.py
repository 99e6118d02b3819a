"""OpenAPI: the schema class of the API's views, the schema view and the docs page.

The schema view describes only this app's endpoints (with the host's mount prefix), so a
host with an API of its own keeps it out of ours; a host that generates one schema for
its whole site picks our endpoints up as well (see docs/api.md, SPECTACULAR_SETTINGS).
"""

from __future__ import annotations

from typing import Any, cast

from django.urls import reverse
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request

from .. import __version__
from .enums import ENUM_NAME_OVERRIDES
from .serializers import ErrorSerializer

DESCRIPTION = """\
Start and inspect workflows, operate on their steps, discover templates and handlers.

Every endpoint but `health/live/` and `health/ready/` needs an authenticated user with the
Django permissions listed in docs/api.md. Errors have one shape:
`{"detail": str, "code": str, "errors": [{"path", "message"}]}`.
"""


class TaskerAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the error responses every endpoint can give."""

    def _error_statuses(self) -> list[int]:
        view: Any = self.view
        declared = getattr(view, "error_statuses", None)
        if declared is not None:
            return list(declared)
        statuses = [401, 403]
        is_list = self.method == "GET" and self._is_list_view()
        if is_list or self.method in ("POST", "PUT", "PATCH"):
            statuses.append(400)  # bad query parameters or body
        if "{" in self.path or is_list:
            statuses.append(404)  # a missing object, or a page past the end
        if self.method in ("POST", "PUT", "PATCH"):
            statuses += [413, 415]
            if getattr(view, "action", None) not in ("create", None):
                statuses.append(409)
        return statuses

    def _get_response_bodies(self, direction: Any = "response") -> Any:
        responses = super()._get_response_bodies(direction)
        for status in self._error_statuses():
            code = str(status)
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    ErrorSerializer, code, ["application/json"], direction
                )
        return responses


class TaskerSchemaGenerator(SchemaGenerator):
    """Only the endpoints of tasker-django's API (views marked ``tasker_api``)."""

    def _initialise_endpoints(self) -> None:
        super()._initialise_endpoints()
        self.endpoints = [
            endpoint
            for endpoint in self.endpoints or []
            if getattr(getattr(cast(Any, endpoint)[3], "cls", None), "tasker_api", False)
        ]


SCHEMA_SETTINGS: dict[str, Any] = {
    "TITLE": "tasker-django API",
    "DESCRIPTION": DESCRIPTION,
    "VERSION": __version__,
    "ENUM_NAME_OVERRIDES": ENUM_NAME_OVERRIDES,
}


def _clear_enum_cache() -> None:
    # drf-spectacular caches ENUM_NAME_OVERRIDES per language, not per settings, so the
    # host's overrides and ours would leak into each other's schema.
    from drf_spectacular import plumbing

    cached = getattr(plumbing, "_load_enum_name_overrides", None)
    if cached is not None and hasattr(cached, "cache_clear"):
        cached.cache_clear()


class SchemaView(SpectacularAPIView):
    """The OpenAPI 3 document of this API (YAML; ``?format=json`` for JSON)."""

    permission_classes = [IsAuthenticated]
    generator_class = TaskerSchemaGenerator
    custom_settings = SCHEMA_SETTINGS

    def _get_schema_response(self, request: Request) -> Any:
        _clear_enum_cache()
        try:
            return super()._get_schema_response(request)
        finally:
            _clear_enum_cache()


class DocsView(SpectacularSwaggerView):
    """Swagger UI for the schema above."""

    permission_classes = [IsAuthenticated]

    def _get_schema_url(self, request: Request) -> str:
        match = request.resolver_match
        name = f"{match.namespace}:schema" if match and match.namespace else "schema"
        return reverse(name)
