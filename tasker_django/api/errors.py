"""Errors of the API: one body shape for every error, and the domain exceptions mapped.

Every error response is ``{"detail": str, "code": str, "errors": [{"path", "message"}]}``.
``path`` is a JSONPath into the request body (``$.context.amount``) or ``?name`` for a
query parameter. Bodies carry only what the client sent or may see: no tracebacks,
no server paths, no hint whether an object the client cannot see exists.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..exceptions import InvalidTransition, TaskValidationError

logger = logging.getLogger("tasker_django.api")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request is too large."
    default_code = "too_large"

    def __init__(self, detail: str, path: str = "$") -> None:
        super().__init__(detail)
        self.errors = [{"path": path, "message": detail}]


class InvalidInput(exceptions.APIException):
    """400 with a list of ``{"path", "message"}`` errors."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Invalid input."
    default_code = "invalid"

    def __init__(
        self, detail: str, errors: list[dict[str, Any]] | None = None, code: str = "invalid"
    ) -> None:
        super().__init__(detail, code)
        self.errors = [
            {"path": str(e.get("path", "$")), "message": str(e.get("message", ""))}
            for e in (errors or [])
        ]


def join_path(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    if _IDENTIFIER.match(key):
        return f"{base}.{key}"
    return f"{base}[{key!r}]"


def flatten(detail: Any, path: str = "$") -> list[dict[str, str]]:
    """DRF's nested validation detail as a flat list of ``{"path", "message"}``."""
    if isinstance(detail, dict):
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            child = path if key in ("non_field_errors", "detail") else join_path(path, str(key))
            out += flatten(value, child)
        return out
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return [{"path": path, "message": str(item)} for item in detail]
        out = []
        for i, item in enumerate(detail):
            out += flatten(item, join_path(path, i)) if isinstance(item, dict | list) else []
        return out
    return [{"path": path, "message": str(detail)}]


def _summary(errors: list[dict[str, str]]) -> str:
    if not errors:
        return "Invalid input."
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"Invalid input: {first['path']}: {first['message']}{more}"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, with domain exceptions mapped and every body in one shape."""
    if isinstance(exc, InvalidTransition):
        exc = Conflict(str(exc))
    elif isinstance(exc, TaskValidationError):
        exc = InvalidInput(exc.message, exc.errors)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    errors: list[dict[str, str]] = list(getattr(exc, "errors", []))
    if isinstance(exc, InvalidInput):
        detail = str(exc.detail)
    elif isinstance(exc, exceptions.ValidationError):
        errors = flatten(exc.detail)
        detail = _summary(errors)
    elif isinstance(exc.detail, dict | list):
        errors = errors or flatten(exc.detail)
        detail = _summary(errors)
    else:
        detail = str(exc.detail)
    codes = exc.get_codes()
    code = codes if isinstance(codes, str) else exc.default_code
    response.data = {"detail": detail, "code": code, "errors": errors}
    return response
