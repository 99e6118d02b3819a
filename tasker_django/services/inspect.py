"""Read-only views of a task for people: why each unfinished step is not running yet."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..engine import clock
from ..models import (
    DONE_STEP_STATUSES,
    StepStatus,
    Task,
    TaskStatus,
    WorkflowStep,
    WorkflowStepEdge,
)


@dataclass(frozen=True)
class StepState:
    id: int
    name: str
    status: str
    attempts: int
    max_attempts: int
    parents: tuple[str, ...]
    reason: str
    last_error: dict[str, Any] | None


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "?"


def step_states(task: Task, now: datetime | None = None) -> list[StepState]:
    """Every step of ``task`` in position order with a human-readable waiting reason.

    Two queries whatever the task size: the steps, and the edges.
    """
    now = now or clock.now()
    steps = list(
        WorkflowStep.objects.filter(task=task)
        .order_by("position", "pk")
        .only(
            "pk",
            "name",
            "status",
            "attempts",
            "max_attempts",
            "next_attempt_at",
            "enqueued_at",
            "lease_expires_at",
            "worker_id",
            "claimed_at",
            "last_error",
        )
    )
    by_id = {s.pk: s for s in steps}
    parents: dict[int, list[int]] = defaultdict(list)
    for src, dst in WorkflowStepEdge.objects.filter(task=task).values_list(
        "from_step_id", "to_step_id"
    ):
        parents[dst].append(src)
    past_deadline = (
        task.deadline_at is not None
        and task.deadline_at <= now
        and task.status in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)
    )
    out = []
    for s in steps:
        parent_steps = [by_id[p] for p in parents[s.pk] if p in by_id]
        reason = step_reason(task, s, parent_steps, now)
        if past_deadline and s.status not in (*DONE_STEP_STATUSES, StepStatus.ERROR):
            reason = f"task past its deadline ({_when(task.deadline_at)}); " + reason
        out.append(
            StepState(
                id=s.pk,
                name=s.name,
                status=s.status,
                attempts=s.attempts,
                max_attempts=s.max_attempts,
                parents=tuple(p.name for p in parent_steps),
                reason=reason,
                last_error=s.last_error,
            )
        )
    return out


def step_reason(
    task: Task, step: WorkflowStep, parent_steps: list[WorkflowStep], now: datetime
) -> str:
    status = step.status
    error = (step.last_error or {}).get("message", "")
    if status in DONE_STEP_STATUSES:
        return ""
    if status == StepStatus.CANCELLED:
        return "cancelled"
    if status == StepStatus.ERROR:
        return f"failed after {step.attempts} of {step.max_attempts} attempts: {error}".rstrip(": ")
    if task.status == TaskStatus.CANCELLED:
        return "task cancelled"
    if status == StepStatus.PENDING:
        failed = [p.name for p in parent_steps if p.status == StepStatus.ERROR]
        if failed:
            return "blocked: parent failed: " + ", ".join(failed)
        cancelled = [p.name for p in parent_steps if p.status == StepStatus.CANCELLED]
        if cancelled:
            return "blocked: parent cancelled: " + ", ".join(cancelled)
        waiting = [p.name for p in parent_steps if p.status not in DONE_STEP_STATUSES]
        return "waiting for " + ", ".join(waiting) if waiting else "waiting to be enqueued"
    if status == StepStatus.ENQUEUED:
        if task.status == TaskStatus.ERROR:
            return "ready, but the task failed: retry the failed step to continue"
        return f"enqueued at {_when(step.enqueued_at)}, waiting for a worker"
    if status == StepStatus.WAITING_FOR_RETRY:
        return (
            f"backing off until {_when(step.next_attempt_at)} after attempt "
            f"{step.attempts} of {step.max_attempts} failed: {error}"
        ).rstrip(": ")
    if status == StepStatus.IN_PROGRESS:
        if step.lease_expires_at is not None and step.lease_expires_at < now:
            return (
                f"lease expired at {_when(step.lease_expires_at)}: worker {step.worker_id} "
                "presumed lost, it will be retried"
            )
        return (
            f"running on worker {step.worker_id} since {_when(step.claimed_at)} "
            f"(attempt {step.attempts} of {step.max_attempts})"
        )
    return status
