"""Health: live (the process answers), ready (database and broker answer), status (counts).

``live`` and ``ready`` need no authentication and say nothing but ok/down, so a load
balancer or Kubernetes probe can call them; why a check failed goes to the log.
``status`` needs ``tasker_django.view_task``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, router
from django.db.models import Count, Min, Q
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..conf import tasker_settings
from ..engine import clock, dispatch
from ..models import StepStatus, Task, TaskStatus, WorkflowStep
from .base import TaskerViewMixin
from .enums import CHECK_RESULTS, HEALTH_STATUSES, OK, READY_STATUSES, STUCK_PROBLEMS
from .permissions import visible_namespaces
from .serializers import CountsField

logger = logging.getLogger("tasker_django.api")

DOWN = "down"
#: Stuck steps listed by ``status`` (the counts cover all of them).
STUCK_EXAMPLES = 20


def database_ok() -> bool:
    alias = router.db_for_write(Task)
    try:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:
        logger.warning("readiness: database %r does not answer", alias, exc_info=True)
        return False
    return True


def broker_ok() -> bool:
    return dispatch.ping()


class PublicViewMixin(TaskerViewMixin):
    mask_sensitive = False
    authentication_classes: Sequence[type[BaseAuthentication]] = []
    permission_classes: Any = [AllowAny]


class LiveView(PublicViewMixin, APIView):
    error_statuses: list[int] = []

    @extend_schema(
        summary="Liveness: the web process answers (no authentication)",
        responses=inline_serializer("Live", {"status": serializers.CharField()}),
    )
    def get(self, request: Request) -> Response:
        return Response({"status": OK})


ReadySerializer = inline_serializer(
    "Ready",
    {
        "status": serializers.ChoiceField(choices=READY_STATUSES),
        "checks": inline_serializer(
            "ReadyChecks",
            {
                "database": serializers.ChoiceField(choices=CHECK_RESULTS),
                "broker": serializers.ChoiceField(choices=CHECK_RESULTS),
            },
        ),
    },
)


class ReadyView(PublicViewMixin, APIView):
    error_statuses: list[int] = []

    @extend_schema(
        summary="Readiness: the database and the broker answer (no authentication)",
        responses={200: ReadySerializer, 503: ReadySerializer},
    )
    def get(self, request: Request) -> Response:
        checks = {
            "database": OK if database_ok() else DOWN,
            "broker": OK if broker_ok() else DOWN,
        }
        ready = all(value == OK for value in checks.values())
        return Response(
            {"status": OK if ready else "unavailable", "checks": checks},
            status=200 if ready else 503,
        )


def stuck_steps(now: datetime, names: list[str] | None = None) -> dict[str, Any]:
    """Steps that stayed in a state longer than ``API_STUCK_AFTER_SECONDS``:

    * ``enqueued_too_long``: no worker claimed them (no worker running, or kicks lost
      and no sweeper);
    * ``lease_expired``: their worker died and no sweeper recovered them;
    * ``retry_overdue``: their retry was due and no sweeper enqueued it.

    Each query uses one of the engine's partial indexes.
    """
    limit = now - timedelta(seconds=float(tasker_settings.API_STUCK_AFTER_SECONDS))
    steps = WorkflowStep.objects.all()
    if names is not None:
        steps = steps.filter(task__named_task__namespace__name__in=names)
    kinds = {
        "enqueued_too_long": (
            "enqueued_at",
            steps.filter(status="enqueued", enqueued_at__lt=limit),
        ),
        "lease_expired": (
            "lease_expires_at",
            steps.filter(status="in_progress", lease_expires_at__lt=limit),
        ),
        "retry_overdue": (
            "next_attempt_at",
            steps.filter(status="waiting_for_retry", next_attempt_at__lt=limit),
        ),
    }
    counts: dict[str, int] = {}
    examples: list[dict[str, Any]] = []
    for kind, (field, qs) in kinds.items():
        counts[kind] = qs.count()
        for row in qs.order_by(field).values("pk", "task_id", "name", "status", field)[
            :STUCK_EXAMPLES
        ]:
            examples.append(
                {
                    "id": row["pk"],
                    "task": row["task_id"],
                    "name": row["name"],
                    "status": row["status"],
                    "problem": kind,
                    "since": row[field],
                }
            )
    examples.sort(key=lambda e: e["since"])
    return {"counts": counts, "examples": examples[:STUCK_EXAMPLES]}


def oldest_enqueued_age(now: datetime, names: list[str] | None = None) -> float | None:
    steps = WorkflowStep.objects.filter(status=StepStatus.ENQUEUED)
    if names is not None:
        steps = steps.filter(task__named_task__namespace__name__in=names)
    oldest = steps.aggregate(oldest=Min("enqueued_at"))["oldest"]
    return None if oldest is None else max((now - oldest).total_seconds(), 0.0)


StuckStepSerializer = inline_serializer(
    "StuckStep",
    many=True,
    fields={
        "id": serializers.IntegerField(),
        "task": serializers.IntegerField(),
        "name": serializers.CharField(),
        "status": serializers.ChoiceField(choices=StepStatus.choices),
        "problem": serializers.ChoiceField(choices=STUCK_PROBLEMS),
        "since": serializers.DateTimeField(),
    },
)

StatusSerializer = inline_serializer(
    "Status",
    {
        "status": serializers.ChoiceField(
            choices=HEALTH_STATUSES, help_text="degraded: stuck steps or overdue tasks."
        ),
        "time": serializers.DateTimeField(),
        "tasks": CountsField(help_text="Tasks by status."),
        "steps": CountsField(help_text="Steps by status."),
        "stuck": CountsField(help_text="Stuck steps by problem."),
        "stuck_steps": StuckStepSerializer,
        "overdue_tasks": serializers.IntegerField(
            help_text="Running tasks past their deadline (the sweeper fails them)."
        ),
        "oldest_enqueued_age_seconds": serializers.FloatField(allow_null=True),
        "queue_size": serializers.IntegerField(
            allow_null=True, help_text="Messages in the broker (null: cannot tell)."
        ),
    },
)


class StatusView(TaskerViewMixin, APIView):
    mask_sensitive = False
    required_permissions = {"*": ("view_task",)}

    @extend_schema(
        summary="Counts by state, stuck steps and overdue tasks",
        responses=StatusSerializer,
    )
    def get(self, request: Request) -> Response:
        now = clock.now()
        names = visible_namespaces(request)
        tasks = Task.objects.all()
        steps = WorkflowStep.objects.all()
        if names is not None:
            tasks = tasks.filter(named_task__namespace__name__in=names)
            steps = steps.filter(task__named_task__namespace__name__in=names)
        task_counts = Counter(dict(tasks.values_list("status").annotate(n=Count("pk")).order_by()))
        step_counts = Counter(dict(steps.values_list("status").annotate(n=Count("pk")).order_by()))
        stuck = stuck_steps(now, names)
        overdue = tasks.filter(
            Q(status__in=[TaskStatus.PENDING, TaskStatus.IN_PROGRESS]), deadline_at__lt=now
        ).count()
        degraded = overdue or any(stuck["counts"].values())
        return Response(
            {
                "status": "degraded" if degraded else OK,
                "time": now,
                "tasks": {status: task_counts.get(status, 0) for status in TaskStatus.values},
                "steps": {status: step_counts.get(status, 0) for status in StepStatus.values},
                "stuck": stuck["counts"],
                "stuck_steps": stuck["examples"],
                "overdue_tasks": overdue,
                "oldest_enqueued_age_seconds": oldest_enqueued_age(now, names),
                "queue_size": dispatch.queue_size(),
            }
        )
