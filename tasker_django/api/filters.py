"""django-filter filter sets of the API's lists, and a backend reporting bad parameters
in the API's error shape (``?name`` paths)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.db import connections
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL
from django_filters.fields import IsoDateTimeField
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.request import Request

from ..models import NamedTask, StepStatus, Task, TaskEvent, TaskStatus, WorkflowStep
from .errors import InvalidInput


class TaskerFilterBackend(DjangoFilterBackend):
    def filter_queryset(self, request: Request, queryset: QuerySet[Any], view: Any) -> Any:
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            errors = [
                {"path": f"?{name}", "message": str(message)}
                for name, messages in filterset.errors.items()
                for message in messages
            ]
            first = errors[0] if errors else {"path": "?", "message": "invalid"}
            raise InvalidInput(
                f"Invalid query parameter {first['path']}: {first['message']}", errors
            )
        return filterset.qs


class IdFilter(django_filters.NumberFilter):
    """An integer id (a number with a fraction is an invalid parameter, not a match)."""

    field_class = forms.IntegerField


class UTCDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, converted to UTC (PostgreSQL refuses offsets beyond ±15:59)."""

    def to_python(self, value: Any) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError("Enter a date-time within years 1 to 9999 in UTC.")


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


def tag_filter(queryset: QuerySet[Task], value: str) -> QuerySet[Task]:
    """Tasks whose tags are a list holding the string ``value``, or an object with that key."""
    has_key = Q(tags__has_key=value)
    vendor = connections[queryset.db].vendor
    if vendor == "postgresql":  # jsonb ? also matches the string elements of an array
        return queryset.filter(has_key)
    if vendor == "sqlite":
        in_list = RawSQL(  # noqa: S611  (a constant table name; the value is a parameter)
            f"SELECT t.id FROM {Task._meta.db_table} t, json_each(t.tags) j "  # noqa: S608
            "WHERE json_type(t.tags) = 'array' AND j.type = 'text' AND j.value = %s",
            [value],
        )
        return queryset.filter(has_key | Q(pk__in=in_list))
    return queryset.filter(has_key | Q(tags__contains=[value]))


class TaskFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=TaskStatus.choices, help_text="Task status; repeat for several."
    )
    namespace = django_filters.CharFilter(field_name="named_task__namespace__name")
    name = django_filters.CharFilter(field_name="named_task__name", help_text="Template name.")
    version = django_filters.CharFilter(field_name="named_task__version")
    created_after = UTCDateTimeFilter(
        field_name="created_at", lookup_expr="gte", help_text="ISO 8601; inclusive."
    )
    created_before = UTCDateTimeFilter(
        field_name="created_at", lookup_expr="lt", help_text="ISO 8601; exclusive."
    )
    tag = django_filters.CharFilter(
        method="filter_tag",
        help_text="Tasks whose tags list holds this string, or whose tags object has this key.",
    )
    initiator = django_filters.CharFilter()
    source_system = django_filters.CharFilter()
    idempotency_key = django_filters.CharFilter()

    class Meta:
        model = Task
        fields: list[str] = []

    def filter_tag(self, queryset: QuerySet[Task], name: str, value: str) -> QuerySet[Task]:
        return tag_filter(queryset, value)


class StepFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=StepStatus.choices, help_text="Step status; repeat for several."
    )
    name = django_filters.CharFilter(help_text="Step name.")
    task = IdFilter(field_name="task_id", help_text="Task id.")
    namespace = django_filters.CharFilter(field_name="task__named_task__namespace__name")

    class Meta:
        model = WorkflowStep
        fields: list[str] = []


class TaskStepFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=StepStatus.choices, help_text="Step status; repeat for several."
    )
    name = django_filters.CharFilter(help_text="Step name.")

    class Meta:
        model = WorkflowStep
        fields: list[str] = []


class EventFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(help_text="Event name, e.g. step.failed.")
    kind = django_filters.ChoiceFilter(choices=TaskEvent.Kind.choices)
    step = IdFilter(field_name="step_id", help_text="Step id.")

    class Meta:
        model = TaskEvent
        fields: list[str] = []


class TemplateFilter(django_filters.FilterSet):
    namespace = django_filters.CharFilter(field_name="namespace__name")
    name = django_filters.CharFilter()

    class Meta:
        model = NamedTask
        fields: list[str] = []
