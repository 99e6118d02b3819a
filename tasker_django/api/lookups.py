"""Finding the objects a request may see (the namespace hook applied), and path parameters."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import NotFound
from rest_framework.request import Request

from ..models import NamedTask, Task
from ..security.access import for_request
from .permissions import visible_namespaces

TASK_ID = OpenApiParameter("task_id", OpenApiTypes.INT, OpenApiParameter.PATH)
TEMPLATE_PARAMS = [
    OpenApiParameter("namespace", OpenApiTypes.STR, OpenApiParameter.PATH),
    OpenApiParameter("name", OpenApiTypes.STR, OpenApiParameter.PATH),
]
VERSION = OpenApiParameter("version", OpenApiTypes.STR, OpenApiParameter.PATH)


MAX_ID = 2**63 - 1


def parse_id(value: Any) -> int:
    """A path's object id; anything but a positive 64-bit integer is a 404 (in JSON)."""
    text = str(value)
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= MAX_ID:
        raise NotFound()
    return int(text)


def fake(view: Any) -> bool:
    """True while drf-spectacular inspects the view (no real request)."""
    return bool(getattr(view, "swagger_fake_view", False))


def visible_tasks(request: Request) -> QuerySet[Task]:
    qs = Task.objects.select_related("named_task__namespace")
    # security.access_control: tasks of templates the user may not use are hidden.
    qs = for_request(request).exclude_hidden(qs, "named_task_id")
    names = visible_namespaces(request)
    return qs if names is None else qs.filter(named_task__namespace__name__in=names)


def visible_task_or_404(request: Request, task_id: Any) -> Task:
    task = visible_tasks(request).filter(pk=parse_id(task_id)).first()
    if task is None:
        raise NotFound()
    return task


def visible_templates(request: Request) -> QuerySet[NamedTask]:
    qs = NamedTask.objects.filter(is_current=True).select_related("namespace")
    names = visible_namespaces(request)
    return qs if names is None else qs.filter(namespace__name__in=names)


def check_path_names(*values: str) -> None:
    # Text columns cannot hold NUL; such a name cannot exist.
    if any("\x00" in value for value in values):
        raise NotFound()


def template_or_404(request: Request, namespace: str, name: str, version: str) -> NamedTask:
    check_path_names(namespace, name, version)
    named_task = (
        visible_templates(request)
        .filter(namespace__name=namespace, name=name, version=version)
        .first()
    )
    if named_task is None:
        raise NotFound()
    return named_task
