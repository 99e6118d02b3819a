"""The REST API side of security: masked responses, access checks on create."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.response import Response

from .access import for_request
from .crypto import EncryptionNotConfigured, check_encryption_ready


class EncryptionUnavailable(APIException):
    status_code = 503
    default_detail = "The template encrypts its data but no encryption key is configured."
    default_code = "encryption_not_configured"


def mask_response(request: Any, response: Any) -> Any:
    """``response`` with its JSON data masked for the request's viewer."""
    if not isinstance(response, Response) or response.data is None:
        return response
    if getattr(response, "_tasker_masked", False):
        return response
    viewer = for_request(request).viewer
    if not viewer.plain:
        response.data = viewer.show(response.data)
    response._tasker_masked = True  # type: ignore[attr-defined]
    return response


def check_create(request: Any, namespace: str, name: str, version: str | None) -> None:
    """403 when ``access_control`` keeps the user from the template; 503 without keys.

    An unknown template passes: ``create_task`` reports it as the API always has.
    """
    from ..exceptions import TemplateNotFound
    from ..services.templates import find_template

    try:
        named_task = find_template(name, namespace=namespace, version=version)
    except TemplateNotFound:
        return
    if not for_request(request).may_use(named_task):
        raise PermissionDenied(
            f"Only members of the groups allowed by {namespace}/{name}'s access_control "
            "may start its tasks."
        )
    try:
        check_encryption_ready(named_task.template)
    except EncryptionNotConfigured as exc:
        raise EncryptionUnavailable(str(exc)) from None
