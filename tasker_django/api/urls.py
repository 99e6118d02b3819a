"""Routes of the REST API (included by :mod:`tasker_django.urls`)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path
from rest_framework.routers import SimpleRouter

from . import alerts, audit, graphs, health, metrics, schema, views

router = SimpleRouter()
router.register("tasks", views.TaskViewSet, basename="task")
router.register("steps", views.StepViewSet, basename="step")

TEMPLATE = "templates/<str:namespace>/<str:name>/<str:version>/"

urlpatterns: list[URLPattern | URLResolver] = [
    *router.urls,
    path("tasks/<str:task_id>/steps/", views.TaskStepListView.as_view(), name="task-steps"),
    path("tasks/<str:task_id>/events/", views.TaskEventListView.as_view(), name="task-events"),
    path("tasks/<str:task_id>/graph/", graphs.TaskGraphView.as_view(), name="task-graph"),
    path(
        "tasks/<str:task_id>/graph/mermaid/",
        graphs.TaskGraphMermaidView.as_view(),
        name="task-graph-mermaid",
    ),
    path(
        "tasks/<str:task_id>/graph/svg/", graphs.TaskGraphSVGView.as_view(), name="task-graph-svg"
    ),
    path("namespaces/", views.NamespaceListView.as_view(), name="namespace-list"),
    path("templates/", views.TemplateListView.as_view(), name="template-list"),
    path(
        "templates/<str:namespace>/<str:name>/",
        views.TemplateView.as_view(),
        name="template-detail",
    ),
    path(TEMPLATE, views.TemplateVersionView.as_view(), name="template-version"),
    path(f"{TEMPLATE}graph/", graphs.TemplateGraphView.as_view(), name="template-graph"),
    path(
        f"{TEMPLATE}graph/mermaid/",
        graphs.TemplateGraphMermaidView.as_view(),
        name="template-graph-mermaid",
    ),
    path(f"{TEMPLATE}graph/svg/", graphs.TemplateGraphSVGView.as_view(), name="template-graph-svg"),
    path("handlers/", views.HandlerListView.as_view(), name="handler-list"),
    path("audit/", audit.AuditRecordListView.as_view(), name="audit-list"),
    path("alerts/", alerts.AlertListView.as_view(), name="alert-list"),
    path("alerts/<str:alert_id>/", alerts.AlertDetailView.as_view(), name="alert-detail"),
    path("health/live/", health.LiveView.as_view(), name="health-live"),
    path("health/ready/", health.ReadyView.as_view(), name="health-ready"),
    path("health/status/", health.StatusView.as_view(), name="health-status"),
    path("metrics/", metrics.MetricsView.as_view(), name="metrics"),
    path("schema/", schema.SchemaView.as_view(), name="schema"),
    path("docs/", schema.DocsView.as_view(), name="docs"),
]
