"""A task's or template's DAG as JSON, Mermaid and SVG (drawn by :mod:`tasker_django.graphs`)."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response

from ..definitions.graph import dependency_levels
from ..graphs import render_mermaid, render_svg
from ..models import NamedStep, NamedStepEdge, NamedTask, Task, WorkflowStep, WorkflowStepEdge
from . import serializers as s
from .base import NonJSONViewMixin, TaskerViewMixin, api_url
from .lookups import TASK_ID, TEMPLATE_PARAMS, VERSION, template_or_404, visible_task_or_404

SVG_HEADERS = {
    # A drawing, not a document: no scripts, no external loads, no sniffing.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


def _graph(
    rows: list[tuple[int | None, str, str | None, str | None]], edges: list[tuple[str, str]]
) -> dict[str, Any]:
    names = [name for _, name, _, _ in rows]
    levels = dependency_levels(names, edges)
    level_of = {name: i for i, level in enumerate(levels) for name in level}
    return {
        "nodes": [
            {"id": pk, "name": name, "status": status, "url": url, "level": level_of[name]}
            for pk, name, status, url in rows
        ],
        "edges": [{"parent": parent, "child": child} for parent, child in edges],
        "levels": levels,
    }


def task_graph(task: Task, request: Request) -> dict[str, Any]:
    """Nodes (steps with status and API URL), edges and dependency levels. Two queries."""
    steps = WorkflowStep.objects.filter(task=task).order_by("position", "pk")
    rows: list[tuple[int | None, str, str | None, str | None]] = [
        (pk, name, status, api_url(request, "step-detail", pk))
        for pk, name, status in steps.values_list("pk", "name", "status")
    ]
    edges = list(
        WorkflowStepEdge.objects.filter(task=task)
        .order_by("pk")
        .values_list("from_step__name", "to_step__name")
    )
    return _graph(rows, edges)


def template_graph(named_task: NamedTask) -> dict[str, Any]:
    """Nodes (steps, no status), edges and dependency levels of a template. Two queries."""
    names = NamedStep.objects.filter(named_task=named_task).order_by("position", "pk")
    rows: list[tuple[int | None, str, str | None, str | None]] = [
        (None, name, None, None) for name in names.values_list("name", flat=True)
    ]
    edges = list(
        NamedStepEdge.objects.filter(named_task=named_task)
        .order_by("pk")
        .values_list("from_step__name", "to_step__name")
    )
    return _graph(rows, edges)


def _edges(graph: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["parent"], e["child"]) for e in graph["edges"]]


def mermaid_response(graph: dict[str, Any]) -> HttpResponse:
    return HttpResponse(
        render_mermaid(graph["nodes"], _edges(graph)), content_type="text/plain; charset=utf-8"
    )


def svg_response(graph: dict[str, Any], title: str) -> HttpResponse:
    svg = render_svg(graph["nodes"], _edges(graph), graph["levels"], title=title)
    response = HttpResponse(svg, content_type="image/svg+xml; charset=utf-8")
    for header, value in SVG_HEADERS.items():
        response[header] = value
    return response


MERMAID = {(200, "text/plain"): OpenApiTypes.STR}
SVG = {(200, "image/svg+xml"): OpenApiTypes.STR}


class TaskGraphMixin(TaskerViewMixin):
    required_permissions = {"*": ("view_task",)}
    error_statuses = [401, 403, 404]

    def graph(self, request: Request, task_id: str) -> tuple[Task, dict[str, Any]]:
        task = visible_task_or_404(request, task_id)
        return task, task_graph(task, request)


@extend_schema(summary="A task's DAG (JSON)", parameters=[TASK_ID], responses=s.GraphSerializer)
class TaskGraphView(TaskGraphMixin, generics.GenericAPIView[Task]):
    serializer_class = s.GraphSerializer

    def get(self, request: Request, task_id: str) -> Response:
        return Response(s.GraphSerializer(self.graph(request, task_id)[1]).data)


@extend_schema(summary="A task's DAG (Mermaid)", parameters=[TASK_ID], responses=MERMAID)
class TaskGraphMermaidView(NonJSONViewMixin, TaskGraphMixin, generics.GenericAPIView[Task]):
    def get(self, request: Request, task_id: str) -> HttpResponse:
        return mermaid_response(self.graph(request, task_id)[1])


@extend_schema(summary="A task's DAG (SVG)", parameters=[TASK_ID], responses=SVG)
class TaskGraphSVGView(NonJSONViewMixin, TaskGraphMixin, generics.GenericAPIView[Task]):
    def get(self, request: Request, task_id: str) -> HttpResponse:
        task, graph = self.graph(request, task_id)
        title = f"task {task.pk}: {task.named_task}"
        return svg_response(graph, title)


class TemplateGraphMixin(TaskerViewMixin):
    required_permissions = {"*": ("view_namedtask",)}
    error_statuses = [401, 403, 404]

    def graph(
        self, request: Request, namespace: str, name: str, version: str
    ) -> tuple[NamedTask, dict[str, Any]]:
        named_task = template_or_404(request, namespace, name, version)
        return named_task, template_graph(named_task)


TEMPLATE_GRAPH_PARAMS = [*TEMPLATE_PARAMS, VERSION]


@extend_schema(
    summary="A template's DAG (JSON)",
    parameters=TEMPLATE_GRAPH_PARAMS,
    responses=s.GraphSerializer,
)
class TemplateGraphView(TemplateGraphMixin, generics.GenericAPIView[NamedTask]):
    serializer_class = s.GraphSerializer

    def get(self, request: Request, namespace: str, name: str, version: str) -> Response:
        graph = self.graph(request, namespace, name, version)[1]
        return Response(s.GraphSerializer(graph).data)


@extend_schema(
    summary="A template's DAG (Mermaid)", parameters=TEMPLATE_GRAPH_PARAMS, responses=MERMAID
)
class TemplateGraphMermaidView(
    NonJSONViewMixin, TemplateGraphMixin, generics.GenericAPIView[NamedTask]
):
    def get(self, request: Request, namespace: str, name: str, version: str) -> HttpResponse:
        return mermaid_response(self.graph(request, namespace, name, version)[1])


@extend_schema(summary="A template's DAG (SVG)", parameters=TEMPLATE_GRAPH_PARAMS, responses=SVG)
class TemplateGraphSVGView(
    NonJSONViewMixin, TemplateGraphMixin, generics.GenericAPIView[NamedTask]
):
    def get(self, request: Request, namespace: str, name: str, version: str) -> HttpResponse:
        named_task, graph = self.graph(request, namespace, name, version)
        return svg_response(graph, str(named_task))
