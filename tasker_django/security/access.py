"""Who may see and act on a template's tasks (``security.access_control``), and how
much of their data each viewer sees (masking), per request.

* ``allowed_roles``: Django group names. Only superusers and members of one of the
  groups see the template's tasks (lists leave them out, details answer 404) and
  may create or operate them (403). No ``allowed_roles``: no restriction beyond the
  usual permissions.
* ``authentication_required``: anonymous users never see the tasks (the API and
  the admin always require a logged-in user anyway).

Masking (:class:`Viewer`): superusers see everything; users with
``tasker_django.view_sensitive_data`` see plain values except card data while any
template has ``pci_compliance.enabled``; everybody else sees sensitive fields
(``TASKER["SENSITIVE_FIELDS"]`` plus every template's ``security.sensitive_fields``)
masked and card numbers in free text cut to their last four digits.

All of it costs at most two queries per request (template ids and hashes; the
user's groups, only when some template restricts roles), none for superusers.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connections
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL

from . import masking
from .policy import CARD_FIELDS, SecurityPolicy, policies, policy_of


def _is_superuser(user: Any) -> bool:
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and getattr(user, "is_superuser", False)
    )


def _groups(user: Any) -> frozenset[str]:
    if not (user is not None and getattr(user, "is_authenticated", False)):
        return frozenset()
    cached = getattr(user, "_tasker_groups", None)
    if cached is None:
        cached = frozenset(user.groups.values_list("name", flat=True))
        user._tasker_groups = cached
    return cached


def allowed(user: Any, policy: SecurityPolicy) -> bool:
    """Whether ``user`` may see and act on tasks of a template with ``policy``."""
    if _is_superuser(user):
        return True
    authenticated = bool(user is not None and getattr(user, "is_authenticated", False))
    if policy.authentication_required and not authenticated:
        return False
    if policy.allowed_roles is None:
        return True
    return bool(policy.allowed_roles & _groups(user))


class Viewer:
    """How much one person may see. ``plain``: nothing is masked.

    ``names`` (masked keys) may be given as a function, called on first use: free
    text needs no names, so pages showing only messages cost no query.
    """

    def __init__(
        self,
        plain: bool = False,
        names: frozenset[str] | Callable[[], frozenset[str]] = frozenset(),
        text: bool | Callable[[], bool] = True,
    ) -> None:
        self.plain = plain
        self._names = names
        self._text = text

    @property
    def names(self) -> frozenset[str]:
        if callable(self._names):
            self._names = self._names()
        return self._names

    @property
    def text(self) -> bool:
        if callable(self._text):
            self._text = self._text()
        return self._text

    def show(self, data: Any) -> Any:
        if self.plain:
            return data
        if isinstance(data, str):
            return self.show_text(data)
        if not isinstance(data, dict | list | tuple):
            return data
        names = self.names
        if not names:
            return masking.mask(data, ()) if self.text else data
        return masking.mask(data, names)

    def show_text(self, text: Any) -> Any:
        if self.plain or not isinstance(text, str) or not self.text:
            return text
        return masking.mask_text(text)


PLAIN = Viewer(plain=True)


def masking_viewer(named_task: Any = None) -> Viewer:
    """The viewer of commands and logs: every sensitive name masked (the configured
    ones plus those ``named_task``'s template declares), card numbers in text too."""
    names = masking.configured_fields()
    if named_task is not None:
        names = names | policy_of(named_task).sensitive_fields
    return Viewer(names=names, text=True)


class RequestSecurity:
    """What one request's user may see (computed lazily, once per request)."""

    def __init__(self, user: Any) -> None:
        self.user = user
        self._policies: dict[int, SecurityPolicy] | None = None
        self._hidden: frozenset[int] | None = None
        self._viewer: Viewer | None = None

    @property
    def superuser(self) -> bool:
        return _is_superuser(self.user)

    @property
    def policies(self) -> dict[int, SecurityPolicy]:
        if self._policies is None:
            self._policies = policies()
        return self._policies

    @property
    def hidden_template_ids(self) -> frozenset[int]:
        """Ids of the ``NamedTask`` revisions whose tasks this user may not see."""
        if self._hidden is None:
            if self.superuser:
                self._hidden = frozenset()
            else:
                self._hidden = frozenset(
                    pk
                    for pk, policy in self.policies.items()
                    if (policy.restricted or policy.authentication_required)
                    and not allowed(self.user, policy)
                )
        return self._hidden

    @property
    def viewer(self) -> Viewer:
        if self._viewer is None:
            self._viewer = self._make_viewer()
        return self._viewer

    def _make_viewer(self) -> Viewer:
        if self.superuser:
            return PLAIN
        if masking.can_view_sensitive(self.user):
            # PCI mode: card data stays masked for everyone but superusers.
            # Card numbers in free text are masked for every non-superuser.
            pci = self.pci
            return Viewer(names=lambda: CARD_FIELDS if pci() else frozenset(), text=True)
        return Viewer(names=self._all_sensitive_names, text=True)

    def pci(self) -> bool:
        return any(p.pci for p in self.policies.values())

    def _all_sensitive_names(self) -> frozenset[str]:
        names = set(masking.configured_fields())
        for policy in self.policies.values():
            names |= policy.sensitive_fields
        return frozenset(names)

    def exclude_hidden(self, queryset: QuerySet[Any], lookup: str) -> QuerySet[Any]:
        """``queryset`` without rows of hidden templates (``lookup``: path to the id).

        A subquery of the same statement (no extra round trip): the templates whose
        ``allowed_roles`` name none of the user's groups.
        """
        if self.superuser:
            return queryset
        user = self.user
        if not (user is not None and getattr(user, "is_authenticated", False)):
            hidden = self.hidden_template_ids  # anonymous: rare, computed in Python
            return queryset.exclude(**{f"{lookup}__in": hidden}) if hidden else queryset
        sql = hidden_templates_sql(queryset.db, user)
        # Table names come from model meta; the only value is the user id, a parameter.
        return queryset.exclude(**{f"{lookup}__in": RawSQL(sql, [user.pk])})  # noqa: S611

    def exclude_hidden_audit(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Audit records without those of templates the user may not see.

        Records name their template (namespace, name, version) rather than point to it,
        so they outlive it; hidden templates are few, matched by those three.
        """
        hidden = self.hidden_template_ids
        if not hidden:
            return queryset
        from ..models import NamedTask

        match = Q(pk__in=[])
        for namespace, name, version in (
            NamedTask.objects.using(queryset.db)
            .filter(pk__in=hidden)
            .values_list("namespace__name", "name", "version")
        ):
            match |= Q(namespace=namespace, template=name, version=version)
        return queryset.exclude(match)

    def may_use(self, named_task: Any) -> bool:
        return self.superuser or allowed(self.user, policy_of(named_task))


_ROLES_PATH = ("sections", "security", "access_control", "allowed_roles")


def hidden_templates_sql(alias: str, user: Any) -> str:
    """SQL selecting the ids of templates whose ``allowed_roles`` exclude the user
    (one ``%s`` parameter: the user id)."""
    from ..models import NamedTask

    quote = connections[alias].ops.quote_name
    nt = quote(NamedTask._meta.db_table)
    user_model = get_user_model()
    groups_field = getattr(user_model, "groups", None)
    if groups_field is None:  # a user model without groups: in no group
        member = "SELECT 1 WHERE %s IS NULL"
    else:
        through_model = groups_field.through
        user_column = next(
            f.column for f in through_model._meta.fields if f.related_model is user_model
        )
        member = (
            f"SELECT 1 FROM {quote(through_model._meta.db_table)} ug "  # noqa: S608
            f"JOIN {quote(Group._meta.db_table)} g ON g.id = ug.group_id "
            f"WHERE ug.{quote(user_column)} = %s AND {{has_role}}"
        )
    if connections[alias].vendor == "postgresql":
        roles = "nt.template #> '{" + ",".join(_ROLES_PATH) + "}'"
        has_roles = f"jsonb_typeof({roles}) = 'array' AND jsonb_array_length({roles}) > 0"
        has_role = f"({roles}) ? g.name"
    else:
        path = "$." + ".".join(_ROLES_PATH)
        has_roles = (
            f"json_type(nt.template, '{path}') = 'array' "
            f"AND json_array_length(nt.template, '{path}') > 0"
        )
        has_role = (
            f"EXISTS (SELECT 1 FROM json_each(nt.template, '{path}') r "  # noqa: S608
            "WHERE r.value = g.name)"
        )
    member = member.replace("{has_role}", has_role)
    return f"SELECT nt.id FROM {nt} nt WHERE {has_roles} AND NOT EXISTS ({member})"  # noqa: S608


def for_request(request: Any) -> RequestSecurity:
    """The request's :class:`RequestSecurity` (cached on the request)."""
    store = request.__dict__
    security = store.get("_tasker_security")
    user = getattr(request, "user", None)
    if security is None or security.user is not user:
        security = RequestSecurity(user)
        store["_tasker_security"] = security
    return security


# ---------------------------------------------------------------------------
# The viewer of the page being rendered (admin pages read it while rendering)
# ---------------------------------------------------------------------------

_current: contextvars.ContextVar[Viewer | RequestSecurity | None] = contextvars.ContextVar(
    "tasker_viewer", default=None
)


def current_viewer() -> Viewer:
    """The viewer set by :func:`viewing`; outside of it, everything sensitive is masked."""
    viewer = _current.get()
    if viewer is None:
        return Viewer(names=masking.configured_fields(), text=True)
    if isinstance(viewer, RequestSecurity):
        return viewer.viewer  # computed on first use: pages showing no data pay nothing
    return viewer


@contextmanager
def viewing(viewer: Viewer | RequestSecurity) -> Iterator[None]:
    token = _current.set(viewer)
    try:
        yield
    finally:
        _current.reset(token)


def masked_view(view: Any) -> Any:
    """Wrap an admin view: the request's viewer applies while it runs and renders."""

    @wraps(view)
    def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
        with viewing(for_request(request)):
            response = view(request, *args, **kwargs)
            render = getattr(response, "render", None)
            if callable(render) and not getattr(response, "is_rendered", True):
                response = render()
        return response

    return wrapper


def shown(data: Any) -> Any:
    return current_viewer().show(data)


def shown_text(text: Any) -> Any:
    return current_viewer().show_text(text)
