"""Namespaces and named tasks: versions side by side, the step graph, handlers and policies."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..definitions.graph import dependency_levels
from ..graphs import GraphNode, render_svg
from ..models import NamedStep, NamedStepEdge, NamedTask, Namespace, Task, TaskStatus
from . import display
from .base import ReadOnlyAdmin, url_pattern
from .steps import retry_policy_text


def _count(queryset: QuerySet[Any], field: str) -> Coalesce:
    """A correlated ``COUNT(*)`` of ``queryset`` rows whose ``field`` is the outer row."""
    sub = (
        queryset.filter(**{field: OuterRef("pk")})
        .order_by()
        .values(field)
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(sub, output_field=IntegerField()), 0)


def task_counts(named_task_ids: list[int]) -> dict[int, dict[str, int]]:
    """``{named_task_id: {status: count}}`` in one grouped query."""
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    rows = (
        Task.objects.filter(named_task_id__in=named_task_ids)
        .order_by()
        .values_list("named_task_id", "status")
        .annotate(n=Count("pk"))
    )
    for named_task_id, status, n in rows:
        counts[named_task_id][status] = n
    return counts


def outcome_cells(counts: dict[str, int]) -> list[int]:
    return [counts.get(status, 0) for status in TaskStatus]


def _short_handler(handler: str) -> str:
    return handler.replace("::", ".").rsplit(".", 1)[-1]


@admin.register(Namespace)
class NamespaceAdmin(ReadOnlyAdmin):
    list_display = ("name", "description", "templates", "created_at")
    search_fields = ("name",)
    fields = ("name", "description", "created_at")
    readonly_fields = fields

    class Media:
        css = {"all": ("tasker_django/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Namespace]:
        return (
            super()
            .get_queryset(request)
            .annotate(template_count=_count(NamedTask.objects.all(), "namespace"))
        )

    @admin.display(description=_("template versions"), ordering="template_count")
    def templates(self, obj: Namespace) -> int:
        return int(getattr(obj, "template_count", 0))

    def page_context(self, request: HttpRequest, obj: Namespace) -> dict[str, Any]:
        versions = list(
            NamedTask.objects.filter(namespace=obj)
            .annotate(step_count=_count(NamedStep.objects.all(), "named_task"))
            .order_by("name", "version", "revision")
        )
        counts = task_counts([v.pk for v in versions])
        url = url_pattern("admin:tasker_django_namedtask_change")
        tasks_url = reverse("admin:tasker_django_task_changelist")
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for v in versions:
            per_status = counts.get(v.pk, {})
            groups[v.name].append(
                {
                    "version": v,
                    "url": url(v.pk),
                    "steps": getattr(v, "step_count", 0),
                    "total": sum(per_status.values()),
                    "cells": outcome_cells(per_status),
                    "tasks_url": f"{tasks_url}?template={obj.name}/{v.name}&version={v.version}",
                }
            )
        return {
            "tasker_groups": sorted(groups.items()),
            "tasker_statuses": [display.badge(s) for s in TaskStatus],
        }


@admin.register(NamedTask)
class NamedTaskAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "namespace",
        "version",
        "revision",
        "is_current",
        "steps",
        "tasks",
        "updated_at",
    )
    list_filter = ("namespace", "is_current")
    list_select_related = ("namespace",)
    search_fields = ("name", "namespace__name", "version")
    fields = (
        "namespace",
        "name",
        "version",
        "revision",
        "is_current",
        "description",
        "environment",
        "source",
        "content_hash",
        "created_at",
        "updated_at",
        "template_json",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ("tasker_django/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[NamedTask]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                step_count=_count(NamedStep.objects.all(), "named_task"),
                task_count=_count(Task.objects.all(), "named_task"),
            )
        )

    @admin.display(description=_("steps"), ordering="step_count")
    def steps(self, obj: NamedTask) -> int:
        return int(getattr(obj, "step_count", 0))

    @admin.display(description=_("tasks"), ordering="task_count")
    def tasks(self, obj: NamedTask) -> SafeString:
        url = reverse("admin:tasker_django_task_changelist")
        query = f"?template={obj.namespace.name}/{obj.name}&version={obj.version}"
        return format_html('<a href="{}{}">{}</a>', url, query, getattr(obj, "task_count", 0))

    @admin.display(description=_("template (as loaded)"))
    def template_json(self, obj: NamedTask) -> SafeString:
        return format_html(
            '<details><summary>{}</summary><pre class="tasker-json">{}</pre></details>',
            _("show"),
            display.pretty_json(obj.template),
        )

    def page_context(self, request: HttpRequest, obj: NamedTask) -> dict[str, Any]:
        """Four queries: the versions, their steps, this version's edges, task counts."""
        versions = list(
            NamedTask.objects.filter(namespace_id=obj.namespace_id, name=obj.name).order_by(
                "created_at", "pk"
            )
        )
        version_ids = [v.pk for v in versions]
        steps_by_version: dict[int, list[NamedStep]] = defaultdict(list)
        for step in NamedStep.objects.filter(named_task_id__in=version_ids).order_by(
            "named_task_id", "position", "pk"
        ):
            steps_by_version[step.named_task_id].append(step)
        steps = steps_by_version[obj.pk]
        names = {s.pk: s.name for s in steps}
        parents: dict[str, list[str]] = defaultdict(list)
        edges: list[tuple[str, str]] = []
        for src, dst in NamedStepEdge.objects.filter(named_task=obj).values_list(
            "from_step_id", "to_step_id"
        ):
            if src in names and dst in names:
                edges.append((names[src], names[dst]))
                parents[names[dst]].append(names[src])
        page = reverse("admin:tasker_django_namedtask_change", args=[obj.pk])
        nodes = [
            GraphNode(
                name=s.name, detail=_short_handler(s.handler_class), url=f"{page}#step-{s.pk}"
            )
            for s in steps
        ]
        try:
            levels = dependency_levels([n.name for n in nodes], edges)
            svg = render_svg(nodes, edges, levels, title=str(obj))
        except ValueError:
            svg = ""
        counts = task_counts(version_ids)
        url = url_pattern("admin:tasker_django_namedtask_change")
        # The comparison: one column per version, one row per step name (first seen first).
        step_names: list[str] = []
        for v in versions:
            for s in steps_by_version[v.pk]:
                if s.name not in step_names:
                    step_names.append(s.name)
        by_name = {v.pk: {s.name: s for s in steps_by_version[v.pk]} for v in versions}
        comparison = []
        for name in step_names:
            cells = []
            for v in versions:
                found = by_name[v.pk].get(name)
                cells.append(
                    None
                    if found is None
                    else {
                        "handler": found.handler_class,
                        "policy": retry_policy_text(
                            found.retryable, found.max_attempts, found.backoff
                        ),
                    }
                )
            handlers = {c["handler"] if c else None for c in cells}
            comparison.append({"name": name, "cells": cells, "differs": len(handlers) > 1})
        return {
            "tasker_svg": svg,
            "tasker_steps": [
                {
                    "id": s.pk,
                    "position": s.position,
                    "name": s.name,
                    "description": s.description,
                    "handler": s.handler_class,
                    "config": display.pretty_json(s.handler_config) if s.handler_config else "",
                    "parents": ", ".join(parents.get(s.name, [])),
                    "policy": retry_policy_text(s.retryable, s.max_attempts, s.backoff),
                    "timeout": s.timeout_seconds,
                    "skippable": s.skippable,
                    "dependent_system": s.dependent_system,
                }
                for s in steps
            ],
            "tasker_versions": [
                {
                    "version": v,
                    "url": url(v.pk),
                    "is_this": v.pk == obj.pk,
                    "steps": len(steps_by_version[v.pk]),
                    "total": sum(counts.get(v.pk, {}).values()),
                    "cells": outcome_cells(counts.get(v.pk, {})),
                }
                for v in versions
            ],
            "tasker_status_rows": [
                (display.badge(status), [outcome_cells(counts.get(v.pk, {}))[i] for v in versions])
                for i, status in enumerate(TaskStatus)
            ],
            "tasker_comparison": comparison,
            "tasker_statuses": [display.badge(s) for s in TaskStatus],
        }
