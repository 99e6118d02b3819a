"""Prometheus metrics, read from the database at scrape time.

:class:`TaskerCollector` runs a few aggregate queries when scraped, so every web
process reports the same numbers (nothing is counted in process memory, which would
be per process and lost on restart). Hosts with their own registry can register it:
``prometheus_client.REGISTRY.register(TaskerCollector())``.

Metrics (see docs/api.md):

* ``tasker_tasks{namespace,name,status}``: tasks by template and status;
* ``tasker_steps{status}``: workflow steps by status;
* ``tasker_step_attempts_total{outcome}``: finished attempts by outcome;
* ``tasker_step_retries_total``: attempts after a step's first;
* ``tasker_step_attempt_duration_seconds{outcome}``: attempt durations (histogram);
* ``tasker_task_duration_seconds{status}``: start to finish of finished tasks (histogram);
* ``tasker_oldest_enqueued_step_age_seconds``: how long the oldest ready step has waited;
* ``tasker_stuck_steps{problem}``: steps stuck longer than ``API_STUCK_AFTER_SECONDS``;
* ``tasker_overdue_tasks``: running tasks past their deadline;
* ``tasker_broker_queue_size``: messages waiting in the broker (when it can tell).
* ``tasker_template_<name>{namespace,template}``: the metrics templates declare in
  ``monitoring.metrics`` (:mod:`tasker_django.monitoring.exporter`, docs/monitoring.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.views import APIView

from ..conf import tasker_settings
from ..engine import clock, dispatch
from ..models import NamedTask, StepAttempt, StepStatus, Task, TaskStatus, WorkflowStep
from .base import NonJSONViewMixin, TaskerViewMixin
from .health import oldest_enqueued_age, stuck_steps

#: Upper bounds (seconds) of the duration histograms' buckets.
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
TASK_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


def _bound(value: float) -> str:
    return repr(float(value))


class TaskerCollector(Collector):
    """Aggregates of tasks, steps and attempts, queried when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        now = clock.now()
        yield self._tasks()
        yield self._steps()
        yield from self._attempts()
        yield self._task_durations()
        age = GaugeMetricFamily(
            "tasker_oldest_enqueued_step_age_seconds",
            "Seconds the oldest enqueued (ready, unclaimed) step has waited; 0 when none.",
        )
        age.add_metric([], oldest_enqueued_age(now) or 0.0)
        yield age
        stuck = GaugeMetricFamily(
            "tasker_stuck_steps",
            "Steps stuck longer than TASKER['API_STUCK_AFTER_SECONDS'], by problem.",
            labels=["problem"],
        )
        for problem, count in stuck_steps(now)["counts"].items():
            stuck.add_metric([problem], count)
        yield stuck
        overdue = GaugeMetricFamily("tasker_overdue_tasks", "Running tasks past their deadline.")
        overdue.add_metric(
            [],
            Task.objects.filter(
                status__in=[TaskStatus.PENDING, TaskStatus.IN_PROGRESS], deadline_at__lt=now
            ).count(),
        )
        yield overdue
        size = dispatch.queue_size()
        if size is not None:
            queue = GaugeMetricFamily(
                "tasker_broker_queue_size", "Messages waiting in the django-q2 broker."
            )
            queue.add_metric([], size)
            yield queue

    def _tasks(self) -> Metric:
        family = GaugeMetricFamily(
            "tasker_tasks", "Tasks by template and status.", labels=["namespace", "name", "status"]
        )
        templates = {
            pk: (namespace, name)
            for pk, namespace, name in NamedTask.objects.values_list(
                "pk", "namespace__name", "name"
            )
        }
        counts: dict[tuple[str, str, str], int] = defaultdict(int)
        rows = (
            Task.objects.values_list("named_task_id", "status").annotate(n=Count("pk")).order_by()
        )
        for named_task_id, status, n in rows:
            namespace, name = templates.get(named_task_id, ("", ""))
            counts[(namespace, name, status)] += n
        for labels, n in sorted(counts.items()):
            family.add_metric(list(labels), n)
        return family

    def _steps(self) -> Metric:
        family = GaugeMetricFamily("tasker_steps", "Workflow steps by status.", labels=["status"])
        counts = dict(WorkflowStep.objects.values_list("status").annotate(n=Count("pk")).order_by())
        for status in StepStatus.values:
            family.add_metric([status], counts.get(status, 0))
        return family

    def _attempts(self) -> Iterator[Metric]:
        buckets = {
            f"le_{i}": Count("pk", filter=Q(duration_ms__lte=bound * 1000))
            for i, bound in enumerate(ATTEMPT_BUCKETS)
        }
        rows = (
            StepAttempt.objects.values("outcome")
            .annotate(
                total=Count("pk"),
                retries=Count("pk", filter=Q(attempt_number__gt=1)),
                total_ms=Sum("duration_ms"),
                **buckets,
            )
            .order_by("outcome")
        )
        attempts = CounterMetricFamily(
            "tasker_step_attempts", "Finished step attempts by outcome.", labels=["outcome"]
        )
        retries = CounterMetricFamily(
            "tasker_step_retries",
            "Step attempts after the first (automatic retries, recoveries and operator retries).",
        )
        durations = HistogramMetricFamily(
            "tasker_step_attempt_duration_seconds",
            "Duration of finished step attempts, by outcome.",
            labels=["outcome"],
        )
        total_retries = 0
        for values in rows:
            row: dict[str, Any] = dict(values)
            attempts.add_metric([row["outcome"]], row["total"])
            total_retries += row["retries"]
            durations.add_metric(
                [row["outcome"]],
                buckets=[(_bound(bound), row[f"le_{i}"]) for i, bound in enumerate(ATTEMPT_BUCKETS)]
                + [("+Inf", row["total"])],
                sum_value=(row["total_ms"] or 0.0) / 1000,
            )
        retries.add_metric([], total_retries)
        yield attempts
        yield retries
        yield durations

    def _task_durations(self) -> Metric:
        duration = ExpressionWrapper(
            F("completed_at") - F("started_at"), output_field=DurationField()
        )
        buckets = {
            f"le_{i}": Count("pk", filter=Q(duration__lte=timedelta(seconds=bound)))
            for i, bound in enumerate(TASK_BUCKETS)
        }
        rows = (
            Task.objects.filter(
                status__in=[TaskStatus.COMPLETE, TaskStatus.ERROR],
                started_at__isnull=False,
                completed_at__isnull=False,
            )
            .annotate(duration=duration)
            .values("status")
            .annotate(total=Count("pk"), total_duration=Sum("duration"), **buckets)
            .order_by("status")
        )
        family = HistogramMetricFamily(
            "tasker_task_duration_seconds",
            "Start to finish of complete and failed tasks, by status.",
            labels=["status"],
        )
        for values in rows:
            row: dict[str, Any] = dict(values)
            total: timedelta | None = row["total_duration"]
            family.add_metric(
                [row["status"]],
                buckets=[(_bound(bound), row[f"le_{i}"]) for i, bound in enumerate(TASK_BUCKETS)]
                + [("+Inf", row["total"])],
                sum_value=total.total_seconds() if total is not None else 0.0,
            )
        return family


class MetricsView(NonJSONViewMixin, TaskerViewMixin, APIView):
    """Prometheus text. Needs ``tasker_django.view_task`` unless
    ``TASKER["API_METRICS_PUBLIC"]`` is True."""

    required_permissions = {"*": ("view_task",)}
    error_statuses = [401, 403]

    def get_authenticators(self) -> list[BaseAuthentication]:
        if tasker_settings.API_METRICS_PUBLIC:
            return []
        return super().get_authenticators()

    def get_permissions(self) -> Sequence[Any]:
        if tasker_settings.API_METRICS_PUBLIC:
            return [AllowAny()]
        return super().get_permissions()

    @extend_schema(
        summary="Prometheus metrics",
        responses={(200, "text/plain"): OpenApiTypes.STR},
    )
    def get(self, request: Request) -> HttpResponse:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(TaskerCollector())
        from ..monitoring.exporter import TemplateMetricsCollector

        registry.register(TemplateMetricsCollector())  # monitoring.metrics of templates
        encoder, content_type = choose_encoder(request.META.get("HTTP_ACCEPT", ""))
        return HttpResponse(encoder(registry), content_type=content_type)
