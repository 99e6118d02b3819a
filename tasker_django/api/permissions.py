"""Who may do what: Django model permissions, operator permissions, the namespace hook.

Every view names the permissions each of its actions needs (``required_permissions``,
action -> codenames). Reads need ``view_*`` model permissions, creating a task needs
``add_task``, and the operator actions need the explicit permissions declared on the
models: ``cancel_task``, ``retry_step``, ``resolve_step`` (resolve and complete) and
``cancel_step``.

``TASKER["API_NAMESPACE_ACCESS"]`` may name a function ``(user, namespace, action) ->
bool`` (action: ``view``, ``create``, ``cancel``, ``retry``, ``resolve``). Objects in
namespaces a user may not ``view`` are left out of lists and answer 404; a denied
operator action on a visible object answers 403.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from ..conf import tasker_settings
from ..models import NamedTask, Namespace, Task, WorkflowStep

APP = "tasker_django"

VIEW = "view"
CREATE = "create"
CANCEL = "cancel"
RETRY = "retry"
RESOLVE = "resolve"
NAMESPACE_ACTIONS = (VIEW, CREATE, CANCEL, RETRY, RESOLVE)


def namespace_allowed(request: Request, namespace: str, action: str) -> bool:
    """Whether the namespace hook lets ``request.user`` do ``action`` in ``namespace``.

    Answers are cached on the request, so a list asks once per namespace.
    """
    hook = tasker_settings.API_NAMESPACE_ACCESS
    if hook is None:
        return True
    cache: dict[tuple[str, str], bool] = request.__dict__.setdefault("_tasker_ns_access", {})
    key = (namespace, action)
    if key not in cache:
        cache[key] = bool(hook(request.user, namespace, action))
    return cache[key]


def visible_namespaces(request: Request) -> list[str] | None:
    """Names of the namespaces the user may view, or None when every one is visible."""
    if tasker_settings.API_NAMESPACE_ACCESS is None:
        return None
    names = Namespace.objects.values_list("name", flat=True)
    return [name for name in names if namespace_allowed(request, name, VIEW)]


def namespace_of(obj: Any) -> str | None:
    if isinstance(obj, Task):
        return obj.named_task.namespace.name
    if isinstance(obj, WorkflowStep):
        return obj.task.named_task.namespace.name
    if isinstance(obj, NamedTask):
        return obj.namespace.name
    if isinstance(obj, Namespace):
        return obj.name
    return None


class TaskerPermission(BasePermission):
    """Authenticated, holding the view's ``required_permissions`` for the action, and
    (per object) allowed by the namespace hook for the view's ``namespace_actions``."""

    def _action(self, request: Request, view: Any) -> str:
        action = getattr(view, "action", None)
        return str(action or (request.method or "get").lower())

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        required: dict[str, tuple[str, ...]] = getattr(view, "required_permissions", {})
        needed = required.get(self._action(request, view), required.get("*"))
        if needed is None:  # an action nobody declared: refuse
            return False
        return user.has_perms([f"{APP}.{codename}" for codename in needed])

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        actions: dict[str, str] = getattr(view, "namespace_actions", {})
        action = actions.get(self._action(request, view), VIEW)
        namespace = namespace_of(obj)
        return namespace is None or namespace_allowed(request, namespace, action)
