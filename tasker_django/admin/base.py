"""What every tasker admin shares: read-only model admins and the confirm-then-act view.

The admin never writes a status itself. Operator actions are views that ask for
confirmation (GET renders a form, POST acts), call one ``services.operations``
function, report the outcome with ``messages`` and redirect. Each checks its own
permission and answers 403 without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, reverse
from django.utils.text import smart_split, unescape_string_literal

from ..exceptions import InvalidTransition, TaskValidationError
from ..security.access import for_request, masked_view

#: Permissions of the operator actions (defined in ``models.py``, ``Meta.permissions``).
PERM_RETRY_STEP = "tasker_django.retry_step"
PERM_RESOLVE_STEP = "tasker_django.resolve_step"
PERM_CANCEL_STEP = "tasker_django.cancel_step"
PERM_CANCEL_TASK = "tasker_django.cancel_task"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows are shown, never added, edited or deleted here: they change through services."""

    #: Path from a row to its template revision's id, for ``security.access_control``
    #: (rows of templates the user may not use are hidden); None: not a task's data.
    tasker_template_lookup: str | None = None

    @property
    def urls(self) -> list[Any]:
        # Every view (custom ones included) renders with the request's masking viewer.
        return [_masked_pattern(p) for p in self.get_urls()]

    def get_queryset(self, request: HttpRequest) -> Any:
        queryset = super().get_queryset(request)
        if self.tasker_template_lookup:
            queryset = for_request(request).exclude_hidden(queryset, self.tasker_template_lookup)
        return queryset

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if not super().has_view_permission(request, obj):
            return False
        if obj is None or not self.tasker_template_lookup:
            return True
        named_task: Any = obj
        for part in self.tasker_template_lookup.removesuffix("_id").split("__"):
            named_task = getattr(named_task, part)
        return for_request(request).may_use(named_task)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def page_context(self, request: HttpRequest, obj: Any) -> dict[str, Any]:
        """Extra template context of an object's page; subclasses add theirs."""
        return {}

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if obj is not None:
            context.update(self.page_context(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)


def _masked_pattern(pattern: Any) -> Any:
    if isinstance(pattern, URLPattern):
        return URLPattern(
            pattern.pattern, masked_view(pattern.callback), pattern.default_args, pattern.name
        )
    return pattern


def search_terms(search_term: str) -> Iterator[tuple[str, int | None]]:
    """The admin search box's terms (quotes group words), each with the id it names:
    ``123`` or ``#123`` -> 123, else None."""
    for raw in smart_split(search_term):
        term = raw
        if term[:1] in "\"'" and term[-1:] == term[:1] and len(term) > 1:
            term = unescape_string_literal(term)
        if not term:
            continue
        digits = term.removeprefix("#")
        yield term, int(digits) if digits.isdigit() and len(digits) < 19 else None


def id_or(match: Q, field: str, number: int | None) -> Q:
    """``match``, or also the row whose ``field`` is ``number`` when the term is an id."""
    return match | Q(**{field: number}) if number is not None else match


def require(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


def admin_url(obj: Model, view: str = "change") -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=[obj.pk])


def url_pattern(name: str) -> Callable[[int], str]:
    """``pk -> url`` for a named admin URL with one integer argument, reversing once."""
    marker = 987654321987
    template = reverse(name, args=[marker])
    return lambda pk: template.replace(str(marker), str(pk))


@dataclass
class Confirmation:
    """What a confirmation page shows and what its POST does."""

    title: str
    question: str
    submit_label: str
    form_class: type[forms.Form]
    perform: Callable[[dict[str, Any]], str]
    done_url: str
    cancel_url: str
    objects: Sequence[tuple[str, str]] = ()  # (text, url) of what the action touches
    danger: bool = False
    form_initial: dict[str, Any] | None = None


def confirm_view(
    model_admin: admin.ModelAdmin[Any], request: HttpRequest, confirmation: Confirmation
) -> HttpResponse:
    """GET: the confirmation form. POST: validate, act, message, redirect."""
    if request.method == "POST":
        form = confirmation.form_class(request.POST)
        if form.is_valid():
            try:
                message = confirmation.perform(form.cleaned_data)
            except (InvalidTransition, TaskValidationError) as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, message)
            return HttpResponseRedirect(confirmation.done_url)
    else:
        form = confirmation.form_class(initial=confirmation.form_initial)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": confirmation.title,
        "confirmation": confirmation,
        "form": form,
    }
    return TemplateResponse(request, "admin/tasker_django/confirm_action.html", context)
