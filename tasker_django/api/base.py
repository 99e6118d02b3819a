"""What every view of the API shares: permissions, parser, pagination, errors, schema."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.urls import reverse
from rest_framework.filters import OrderingFilter
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import BasePagination
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.schemas.inspectors import ViewInspector

from ..security.api import mask_response
from .errors import exception_handler
from .filters import TaskerFilterBackend
from .pagination import TaskerPagination
from .parsers import LimitedJSONParser
from .permissions import TaskerPermission
from .schema import TaskerAutoSchema


class TaskerViewMixin:
    """Mixed into every API view (before the DRF base class).

    Authentication is the host's (``DEFAULT_AUTHENTICATION_CLASSES``); permissions,
    parsing, pagination and the error shape are the app's own, so the API behaves the
    same in every project.
    """

    #: Marks the endpoints the app's OpenAPI schema describes.
    # Typed Any: a mixin cannot repeat the generic types the DRF stubs give these.
    tasker_api = True
    schema: ViewInspector | None = TaskerAutoSchema()
    permission_classes: Any = [TaskerPermission]
    parser_classes: Sequence[type[BaseParser]] = [LimitedJSONParser]
    pagination_class: type[BasePagination] | None = TaskerPagination
    filter_backends: Any = [TaskerFilterBackend, OrderingFilter]
    #: action (or lower-case method) -> permission codenames; "*" for the rest.
    required_permissions: dict[str, tuple[str, ...]] = {}
    #: action -> namespace hook action checked on the object (default "view").
    namespace_actions: dict[str, str] = {}
    #: False for views whose answers hold no task data (health): no masking pass.
    mask_sensitive: bool = True

    def get_exception_handler(self) -> Callable[..., Any]:
        return exception_handler

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        # Sensitive values masked for users without view_sensitive_data (security).
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        if not self.mask_sensitive:
            return response
        return mask_response(request, response)


class FirstRendererNegotiation(BaseContentNegotiation):
    """Ignore Accept: views that answer SVG, Mermaid or Prometheus text build their
    responses themselves and render only errors (as JSON)."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        first = next(iter(renderers))
        return first, str(first.media_type)


class NonJSONViewMixin:
    renderer_classes: Sequence[type[BaseRenderer]] = [JSONRenderer]
    content_negotiation_class: type[BaseContentNegotiation] = FirstRendererNegotiation


def api_url(request: Request, name: str, *args: Any) -> str:
    """Path of one of the API's URLs, under the namespace the request came in through."""
    match = request.resolver_match
    namespace = match.namespace if match is not None else ""
    return reverse(f"{namespace}:{name}" if namespace else name, args=args)
