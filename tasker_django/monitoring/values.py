"""The metric values an alert condition sees: built-in ones and declared ones, over a window.

The window is ``(now - window, now]``. Built-in values come from the
``StepAttempt`` and ``Task`` rows of the template (its namespace and name, every
version):

=============================  =========================================================
``step_success_rate``          successful attempts / finished attempts (0..1)
``step_error_rate``            1 - ``step_success_rate``
``step_execution_time``        p95 of attempt durations, seconds
``step_attempts``              finished attempts (0 when none)
``retry_count``, ``retries``   attempts after a step's first (0 when none)
``workflow_completion_rate``   tasks complete (or resolved by hand) / tasks finished
``task_duration``              p95 of start-to-finish durations of finished tasks, seconds
``tasks_finished``             tasks that finished (complete, resolved, error; 0 when none)
``<step>_success_rate``        as ``step_success_rate``, for one step name
``<step>_error_rate``          as ``step_error_rate``, for one step name
``<step>_duration``            p95 of that step's attempt durations, seconds
``<step>_attempts``            that step's finished attempts
``<step>_retries``             that step's attempts after its first
=============================  =========================================================

Cancelled attempts and tasks are left out (an operator's choice, not a failure).
Rates and durations have no value when nothing finished in the window; counts are 0.

Declared metrics (``monitoring.metrics``) read their ``MetricObservation`` rows:
a gauge is its last value, a counter its increase (the sum of what was added), a
histogram the p95 of its observations (nearest rank: with fewer than 20 observations,
the largest). Labels are not told apart. A declared metric with no observation in the
window has no value, unless a built-in has its name: then the built-in value is used.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from ..models import AttemptOutcome, MetricObservation, StepAttempt, Task, TaskStatus
from .declarations import COUNTER, GAUGE, MetricDecl

#: Built-in names available to every template's alerts.
BUILTIN_NAMES = frozenset(
    {
        "step_success_rate",
        "step_error_rate",
        "step_execution_time",
        "step_attempts",
        "retry_count",
        "retries",
        "workflow_completion_rate",
        "task_duration",
        "tasks_finished",
    }
)
#: ``<step name>_<suffix>`` names, per step of the template.
STEP_SUFFIXES = ("success_rate", "error_rate", "duration", "attempts", "retries")

_DONE = (TaskStatus.COMPLETE.value, TaskStatus.RESOLVED_MANUALLY.value)
_FINISHED = (*_DONE, TaskStatus.ERROR.value)


def known_names(step_names: Iterable[str], declared: Iterable[str]) -> set[str]:
    """Every name an alert condition of the template can use."""
    names = set(BUILTIN_NAMES) | set(declared)
    for step in step_names:
        names.update(f"{step}_{suffix}" for suffix in STEP_SUFFIXES)
    return names


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile (the largest value when there are fewer than 20)."""
    ordered = sorted(values)
    rank = max(math.ceil(0.95 * len(ordered)), 1)
    return ordered[rank - 1]


def _rates(prefix: str, outcomes: list[tuple[str, float | None, int]]) -> dict[str, float]:
    values: dict[str, float] = {}
    counted = [o for o in outcomes if o[0] != AttemptOutcome.CANCELLED.value]
    values[f"{prefix}attempts" if prefix else "step_attempts"] = float(len(counted))
    retries = float(sum(1 for o in counted if o[2] > 1))
    if prefix:
        values[f"{prefix}retries"] = retries
    else:
        values["retry_count"] = values["retries"] = retries
    if counted:
        ok = sum(1 for o in counted if o[0] == AttemptOutcome.SUCCESS.value)
        rate = ok / len(counted)
        values[f"{prefix or 'step_'}success_rate"] = rate
        values[f"{prefix or 'step_'}error_rate"] = 1.0 - rate
    durations = [o[1] / 1000 for o in counted if o[1] is not None]
    if durations:
        values[f"{prefix}duration" if prefix else "step_execution_time"] = p95(durations)
    return values


def builtin_values(
    namespace: str, template: str, since: datetime, until: datetime
) -> dict[str, float]:
    """Built-in values of a template over ``(since, until]`` (two queries)."""
    attempts = StepAttempt.objects.filter(
        task__named_task__namespace__name=namespace,
        task__named_task__name=template,
        finished_at__gt=since,
        finished_at__lte=until,
    ).values_list("step__name", "outcome", "duration_ms", "attempt_number")
    by_step: dict[str, list[tuple[str, float | None, int]]] = defaultdict(list)
    everything: list[tuple[str, float | None, int]] = []
    for step, outcome, duration_ms, number in attempts:
        row = (outcome, duration_ms, number)
        by_step[step].append(row)
        everything.append(row)
    values = _rates("", everything)
    for step, rows in by_step.items():
        values.update(_rates(f"{step}_", rows))
    tasks = list(
        Task.objects.filter(
            named_task__namespace__name=namespace,
            named_task__name=template,
            status__in=_FINISHED,
            completed_at__gt=since,
            completed_at__lte=until,
        ).values_list("status", "started_at", "completed_at")
    )
    values["tasks_finished"] = float(len(tasks))
    if tasks:
        done = sum(1 for status, _s, _c in tasks if status in _DONE)
        values["workflow_completion_rate"] = done / len(tasks)
        durations = [
            (c - s).total_seconds() for _st, s, c in tasks if s is not None and c is not None
        ]
        if durations:
            values["task_duration"] = p95(durations)
    return values


def declared_values(
    namespace: str,
    template: str,
    metrics: dict[str, MetricDecl],
    since: datetime,
    until: datetime,
    names: Iterable[str] | None = None,
) -> dict[str, float]:
    """Values of declared metrics from their observations in ``(since, until]`` (one query)."""
    wanted = [n for n in (names if names is not None else metrics) if n in metrics]
    if not wanted:
        return {}
    rows = (
        MetricObservation.objects.filter(
            namespace=namespace,
            template=template,
            name__in=wanted,
            recorded_at__gt=since,
            recorded_at__lte=until,
        )
        .order_by("recorded_at", "id")
        .values_list("name", "value")
    )
    seen: dict[str, list[float]] = defaultdict(list)
    for name, value in rows:
        seen[name].append(value)
    values: dict[str, float] = {}
    for name, observed in seen.items():
        kind = metrics[name].kind
        if kind == GAUGE:
            values[name] = observed[-1]
        elif kind == COUNTER:
            values[name] = float(sum(observed))
        else:
            values[name] = p95(observed)
    return values


def window_values(
    namespace: str,
    template: str,
    metrics: dict[str, MetricDecl],
    window: float,
    now: datetime,
    names: Iterable[str] | None = None,
) -> dict[str, Any]:
    """What a condition of the template sees: built-ins overlaid by declared metrics."""
    since = now - timedelta(seconds=window)
    values: dict[str, Any] = builtin_values(namespace, template, since, now)
    values.update(declared_values(namespace, template, metrics, since, now, names))
    return values
