"""Alerts of the templates' ``monitoring.alerts`` (``alerts/``, ``alerts/{id}/``).

Read-only: rows are written by ``tasker_evaluate_alerts`` and its schedule. Needs
``tasker_django.view_alert``; alerts of namespaces the namespace hook hides are
left out (and answer 404).
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from rest_framework import generics, serializers

from ..models import Alert, AlertStatus
from .base import TaskerViewMixin
from .lookups import fake, parse_id
from .permissions import visible_namespaces


class AlertSerializer(serializers.ModelSerializer[Alert]):
    version = serializers.SerializerMethodField(
        help_text="Version of the template the alert was declared in (null once deleted)."
    )
    values = serializers.JSONField(
        help_text="The metric values the condition saw when it last fired or held."
    )

    class Meta:
        model = Alert
        fields = [
            "id",
            "namespace",
            "template",
            "version",
            "name",
            "severity",
            "description",
            "condition",
            "status",
            "values",
            "fired_at",
            "resolved_at",
            "last_evaluated_at",
        ]
        read_only_fields = fields

    def get_version(self, obj: Alert) -> str | None:
        return obj.named_task.version if obj.named_task is not None else None


class AlertFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=AlertStatus.choices)
    severity = django_filters.CharFilter(help_text="Severity, e.g. warning or critical.")
    namespace = django_filters.CharFilter()
    template = django_filters.CharFilter(help_text="Template name.")
    name = django_filters.CharFilter(help_text="Alert name.")

    class Meta:
        model = Alert
        fields: list[str] = []


def visible_alerts(view: Any) -> QuerySet[Alert]:
    if fake(view):
        return Alert.objects.none()
    qs = Alert.objects.select_related("named_task")
    names = visible_namespaces(view.request)
    return qs if names is None else qs.filter(namespace__in=names)


class AlertListView(TaskerViewMixin, generics.ListAPIView[Alert]):
    """Alerts, newest first; filter by status, severity, namespace, template, name."""

    serializer_class = AlertSerializer
    filterset_class = AlertFilter
    ordering_fields = ["id", "fired_at", "last_evaluated_at", "resolved_at", "severity"]
    ordering = ["-fired_at", "-id"]
    required_permissions = {"*": ("view_alert",)}

    def get_queryset(self) -> QuerySet[Alert]:
        return visible_alerts(self)


class AlertDetailView(TaskerViewMixin, generics.RetrieveAPIView[Alert]):
    serializer_class = AlertSerializer
    filter_backends: list[Any] = []
    required_permissions = {"*": ("view_alert",)}
    lookup_url_kwarg = "alert_id"

    def get_queryset(self) -> QuerySet[Alert]:
        return visible_alerts(self)

    def get_object(self) -> Alert:
        self.kwargs["alert_id"] = parse_id(self.kwargs["alert_id"])
        return super().get_object()
