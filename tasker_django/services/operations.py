"""Operator actions shared by the admin, the API and the CLI.

Each action runs in one transaction under a row lock on the task, refuses with
:class:`~tasker_django.exceptions.InvalidTransition` where the current state does
not allow it, and is recorded in ``TaskEvent`` with who, when and why.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from datetime import datetime
from typing import Any

from django.db import transaction

from ..conf import tasker_settings
from ..engine import clock, dispatch
from ..engine.events import Event, emit_on_commit
from ..exceptions import InvalidTransition, TaskValidationError
from ..models import (
    DONE_STEP_STATUSES,
    StepStatus,
    Task,
    TaskEvent,
    TaskStatus,
    WorkflowStep,
    WorkflowStepEdge,
)
from ..security.crypto import seal_for_template, template_encrypts

logger = logging.getLogger("tasker_django.operations")

RUNNING = (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)
ACTIVE_STEP = (StepStatus.ENQUEUED, StepStatus.IN_PROGRESS, StepStatus.WAITING_FOR_RETRY)
UNSTARTED = (StepStatus.PENDING, StepStatus.ENQUEUED, StepStatus.WAITING_FOR_RETRY)


def _actor(actor: Any) -> str:
    if actor is None:
        return ""
    username = getattr(actor, "get_username", None)
    return str(username() if callable(username) else actor)[:255]


def _lock_task(task_id: int) -> Task:
    try:
        return (
            Task.objects.select_for_update().select_related("named_task__namespace").get(pk=task_id)
        )
    except Task.DoesNotExist:
        raise InvalidTransition(f"task {task_id} does not exist") from None


def _lock_step(step_id: int) -> tuple[Task, WorkflowStep]:
    task_id = WorkflowStep.objects.filter(pk=step_id).values_list("task_id", flat=True).first()
    if task_id is None:
        raise InvalidTransition(f"step {step_id} does not exist")
    task = _lock_task(task_id)
    step = WorkflowStep.objects.select_for_update().get(pk=step_id)
    return task, step


def _check_results(results: Any) -> dict[str, Any] | None:
    if results is None:
        return None
    if not isinstance(results, dict):
        raise TaskValidationError(
            "results must be a JSON object",
            [{"path": "$", "message": f"got {type(results).__name__}"}],
        )
    try:
        return json.loads(json.dumps(results, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TaskValidationError("results must be JSON", [{"path": "$", "message": str(exc)}])


def _action(
    task: Task,
    name: str,
    actor: str,
    reason: str,
    step: WorkflowStep | None = None,
    from_status: str = "",
    to_status: str = "",
    **payload: Any,
) -> Event:
    return Event(
        name=name,
        task_id=task.pk,
        step_id=step.pk if step else None,
        kind=TaskEvent.Kind.ACTION,
        actor=actor,
        reason=reason or "",
        from_status=from_status,
        to_status=to_status,
        payload={
            "task_id": task.pk,
            "step_id": step.pk if step else None,
            "step_name": step.name if step else None,
            "task_name": task.named_task.name,
            "namespace": task.named_task.namespace.name,
            "version": task.named_task.version,
            **payload,
        },
    )


def _step_signal(task: Task, step: WorkflowStep, name: str, **payload: Any) -> Event:
    """The step event (stored and signalled) that goes with an operator action."""
    return Event(
        name=name,
        task_id=task.pk,
        step_id=step.pk,
        payload={
            "task_id": task.pk,
            "step_id": step.pk,
            "step_name": step.name,
            "task_name": task.named_task.name,
            "namespace": task.named_task.namespace.name,
            "version": task.named_task.version,
            "attempt": step.attempts,
            "manual": True,
            **payload,
        },
    )


def refresh_task_status(task: Task, now: datetime) -> list[Event]:
    """Recount a locked task's steps and set its status by precedence (I7).

    Used after operator actions only (O(task size)); the engine's hot path keeps
    the counters incrementally.
    """
    counts: dict[str, int] = defaultdict(int)
    for status in WorkflowStep.objects.filter(task=task).values_list("status", flat=True):
        counts[status] += 1
    done = sum(counts[s] for s in DONE_STEP_STATUSES)
    failed = counts[StepStatus.ERROR]
    active = sum(counts[s] for s in ACTIVE_STEP)
    previous = task.status
    if task.status == TaskStatus.CANCELLED:
        status = TaskStatus.CANCELLED
    elif failed:
        status = TaskStatus.ERROR
    elif done >= task.total_steps:
        status = TaskStatus.COMPLETE
    elif active or (counts[StepStatus.PENDING] and not counts[StepStatus.CANCELLED]):
        status = TaskStatus.IN_PROGRESS
    else:
        status = TaskStatus.CANCELLED  # only cancelled steps stand in the way
    finished = status in (TaskStatus.COMPLETE, TaskStatus.ERROR, TaskStatus.CANCELLED)
    Task.objects.filter(pk=task.pk).update(
        status=status,
        completed_steps=done,
        failed_steps=failed,
        completed_at=(task.completed_at or now) if finished else None,
        started_at=task.started_at or now,
        updated_at=now,
    )
    task.status, task.completed_steps, task.failed_steps = status, done, failed
    events: list[Event] = []
    if status != previous:
        name = {
            TaskStatus.COMPLETE: "task.completed",
            TaskStatus.ERROR: "task.failed",
            TaskStatus.CANCELLED: "task.cancelled",
        }.get(TaskStatus(status), "task.resumed")
        events.append(
            Event(
                name=name,
                task_id=task.pk,
                step_id=None,
                from_status=previous,
                to_status=status,
                payload={"task_id": task.pk, "from": previous, "to": status},
            )
        )
    return events


def _policy_attempts(step: WorkflowStep) -> int:
    named = step.named_step
    if not named.retryable:
        return 1
    return int(named.max_attempts or tasker_settings.DEFAULT_MAX_ATTEMPTS)


def _descendants(task: Task, step_id: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for src, dst in WorkflowStepEdge.objects.filter(task=task).values_list(
        "from_step_id", "to_step_id"
    ):
        children[src].append(dst)
    seen: list[int] = []
    stack = list(children[step_id])
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.append(node)
        stack.extend(children[node])
    return seen


def _recount_parents(task: Task, step_ids: list[int]) -> None:
    """Set ``remaining_parents`` of these steps from their parents' current status."""
    if not step_ids:
        return
    remaining: dict[int, int] = dict.fromkeys(step_ids, 0)
    for child, parent_status in WorkflowStepEdge.objects.filter(
        task=task, to_step_id__in=step_ids
    ).values_list("to_step_id", "from_step__status"):
        if parent_status not in DONE_STEP_STATUSES:
            remaining[child] += 1
    for pk, n in remaining.items():
        WorkflowStep.objects.filter(pk=pk).update(remaining_parents=n)


@transaction.atomic
def retry_step(
    step_id: int, *, actor: Any = None, reason: str = "", reset_downstream: bool = False
) -> WorkflowStep:
    """Enqueue a failed (or backing-off) step again with a fresh attempt budget."""
    task, step = _lock_step(step_id)
    if task.status == TaskStatus.CANCELLED:
        raise InvalidTransition(f"task {task.pk} is cancelled; its steps cannot be retried")
    allowed = (StepStatus.ERROR, StepStatus.WAITING_FOR_RETRY, StepStatus.CANCELLED)
    if step.status not in allowed and not (reset_downstream and step.status in DONE_STEP_STATUSES):
        raise InvalidTransition(
            f"step {step.name!r} is {step.status}; only failed, cancelled or backing-off steps "
            "can be retried (or finished ones with reset_downstream)"
        )
    now = clock.now()
    previous = step.status
    reset: list[int] = []
    if reset_downstream:
        reset = _descendants(task, step.pk)
        WorkflowStep.objects.filter(pk__in=reset).exclude(status=StepStatus.IN_PROGRESS).update(
            status=StepStatus.PENDING,
            results=None,
            next_attempt_at=None,
            enqueued_at=None,
            lease_expires_at=None,
            completed_at=None,
            updated_at=now,
        )
    WorkflowStep.objects.filter(pk=step.pk).update(
        status=StepStatus.ENQUEUED,
        max_attempts=step.attempts + _policy_attempts(step),
        results=None if previous in DONE_STEP_STATUSES else step.results,
        next_attempt_at=None,
        enqueued_at=now,
        lease_expires_at=None,
        completed_at=None,
        updated_at=now,
    )
    _recount_parents(task, reset)
    events = [
        _action(
            task,
            "action.retry_step",
            _actor(actor),
            reason,
            step,
            previous,
            StepStatus.ENQUEUED,
            reset_downstream=reset_downstream,
            reset_steps=len(reset),
        ),
        _step_signal(task, step, "step.retried", actor=_actor(actor), reason=reason),
    ]
    events += refresh_task_status(task, now)
    emit_on_commit(events, now)
    _kick_enqueued(task)
    step.refresh_from_db()
    return step


def _kick_enqueued(task: Task) -> None:
    if task.status in RUNNING:
        ids = list(
            WorkflowStep.objects.filter(task=task, status=StepStatus.ENQUEUED).values_list(
                "pk", flat=True
            )
        )
        dispatch.kick_steps(ids)


@transaction.atomic
def retry_failed_steps(task_id: int, *, actor: Any = None, reason: str = "") -> list[int]:
    """Retry every failed step of a task; returns their ids."""
    task = _lock_task(task_id)
    ids = list(
        WorkflowStep.objects.filter(task=task, status=StepStatus.ERROR).values_list("pk", flat=True)
    )
    if not ids:
        raise InvalidTransition(f"task {task_id} has no failed steps")
    for pk in ids:
        retry_step(pk, actor=actor, reason=reason)
    return ids


def _finish_manually(
    step_id: int,
    status: StepStatus,
    results: Any,
    actor: Any,
    reason: str,
    action: str,
) -> WorkflowStep:
    from ..engine.runner import ready_children

    results = _check_results(results)
    task, step = _lock_step(step_id)
    if task.status == TaskStatus.CANCELLED:
        raise InvalidTransition(f"task {task.pk} is cancelled")
    if step.status in DONE_STEP_STATUSES:
        raise InvalidTransition(f"step {step.name!r} is already {step.status}")
    now = clock.now()
    previous = step.status
    WorkflowStep.objects.filter(pk=step.pk).update(
        status=status,
        # security.encryption: operator results are encrypted like the engine's.
        results=seal_for_template(task.named_task.template, results, "results")
        if results is not None
        else step.results,
        next_attempt_at=None,
        lease_expires_at=None,
        completed_at=now,
        updated_at=now,
    )
    ready_children(step.pk, now)
    signal_name = "step.completed" if status == StepStatus.COMPLETE else "step.resolved"
    events = [
        _action(
            task,
            action,
            _actor(actor),
            reason,
            step,
            previous,
            status,
            # Events are not encrypted: an encrypting template's results stay out of them.
            results="(encrypted)"
            if results is not None and template_encrypts(task.named_task.template)
            else results,
        ),
        _step_signal(task, step, signal_name, actor=_actor(actor), reason=reason),
    ]
    events += refresh_task_status(task, now)
    emit_on_commit(events, now)
    _kick_enqueued(task)
    step.refresh_from_db()
    return step


@transaction.atomic
def resolve_step(
    step_id: int, *, results: Any = None, actor: Any = None, reason: str = ""
) -> WorkflowStep:
    """Mark a step resolved by hand; its children see ``results`` (if given) as its results."""
    return _finish_manually(
        step_id, StepStatus.RESOLVED_MANUALLY, results, actor, reason, "action.resolve_step"
    )


@transaction.atomic
def complete_step(
    step_id: int, *, results: Any, actor: Any = None, reason: str = ""
) -> WorkflowStep:
    """Complete a step by hand with the given results."""
    if results is None:
        raise TaskValidationError("complete_step needs results (a JSON object)")
    return _finish_manually(
        step_id, StepStatus.COMPLETE, results, actor, reason, "action.complete_step"
    )


@transaction.atomic
def cancel_step(step_id: int, *, actor: Any = None, reason: str = "") -> WorkflowStep:
    """Cancel one step; a running handler's late result is discarded."""
    task, step = _lock_step(step_id)
    if step.status in (*DONE_STEP_STATUSES, StepStatus.CANCELLED):
        raise InvalidTransition(f"step {step.name!r} is already {step.status}")
    now = clock.now()
    previous = step.status
    WorkflowStep.objects.filter(pk=step.pk).update(
        status=StepStatus.CANCELLED,
        next_attempt_at=None,
        lease_expires_at=None,
        completed_at=now,
        updated_at=now,
    )
    events = [
        _action(task, "action.cancel_step", _actor(actor), reason, step, previous, "cancelled"),
        _step_signal(task, step, "step.cancelled", actor=_actor(actor), reason=reason),
    ]
    events += refresh_task_status(task, now)
    emit_on_commit(events, now)
    step.refresh_from_db()
    return step


@transaction.atomic
def cancel_task(task_id: int, *, actor: Any = None, reason: str = "") -> Task:
    """Cancel a task: unfinished steps are cancelled, running handlers' results discarded."""
    task = _lock_task(task_id)
    if task.status in (TaskStatus.COMPLETE, TaskStatus.CANCELLED, TaskStatus.RESOLVED_MANUALLY):
        raise InvalidTransition(f"task {task_id} is already {task.status}")
    now = clock.now()
    previous = task.status
    cancelled = WorkflowStep.objects.filter(
        task=task, status__in=(*UNSTARTED, StepStatus.IN_PROGRESS)
    ).update(
        status=StepStatus.CANCELLED,
        next_attempt_at=None,
        lease_expires_at=None,
        completed_at=now,
        updated_at=now,
    )
    Task.objects.filter(pk=task.pk).update(
        status=TaskStatus.CANCELLED, completed_at=now, updated_at=now
    )
    emit_on_commit(
        [
            _action(
                task,
                "task.cancelled",
                _actor(actor),
                reason,
                None,
                previous,
                TaskStatus.CANCELLED,
                cancelled_steps=cancelled,
            )
        ],
        now,
    )
    from ..engine import limits
    from ..engine.policy import policy_for_template

    limits.task_ended(task.named_task_id, policy_for_template(task.named_task_id))
    task.refresh_from_db()
    return task


@transaction.atomic
def expire_task(task_id: int, *, now: datetime | None = None) -> bool:
    """Fail a task past its deadline and cancel the steps that have not started."""
    now = now or clock.now()
    task = _lock_task(task_id)
    if task.status not in RUNNING or task.deadline_at is None or task.deadline_at > now:
        return False
    cancelled = WorkflowStep.objects.filter(task=task, status__in=UNSTARTED).update(
        status=StepStatus.CANCELLED, next_attempt_at=None, completed_at=now, updated_at=now
    )
    Task.objects.filter(pk=task.pk).update(
        status=TaskStatus.ERROR, completed_at=now, updated_at=now
    )
    emit_on_commit(
        [
            Event(
                name="task.failed",
                task_id=task.pk,
                step_id=None,
                from_status=task.status,
                to_status=TaskStatus.ERROR,
                reason="deadline exceeded",
                payload={
                    "task_id": task.pk,
                    "error": {
                        "error_class": "tasker_django.TaskDeadlineExceeded",
                        "message": f"task passed its deadline {task.deadline_at.isoformat()}",
                    },
                    "cancelled_steps": cancelled,
                },
            )
        ],
        now,
    )
    logger.warning("task %s passed its deadline; %s unstarted steps cancelled", task.pk, cancelled)
    return True
