"""Concurrency limits and the failure strategy of templates (docs/design.md, "Limits").

* Steps: ``max_concurrent_steps`` per task (``technical_constraints``,
  ``workflow_config``, ``execution_mode: sequential``) and per template
  (``performance.concurrency.max_concurrent_steps``). A worker claims the step as
  usual, then, for a limited template only, locks the task (or the template) and
  counts running steps; over the limit it gives the claim back: the step returns to
  ``enqueued`` with ``worker_id = "throttled"`` and no attempt counted. When a step
  of a limited template finishes, throttled steps are kicked again, highest task
  priority first; the sweeper's re-kick is the safety net.
* Tasks: ``performance.concurrency.max_concurrent_workflows``. A task created while
  that many run is stored as ``waiting`` with no step enqueued (and no deadline
  yet); when a task of the template ends, the oldest waiting task of the highest
  priority is admitted. ``queue_size`` bounds how many may wait.
* ``workflow_config.failure_strategy: continue_on_failure``: a step failing for good
  does not fail the task; independent branches go on, and the task ends in
  ``error`` once no step can run any more (:func:`settle`).

The template family (every revision of one namespace/name) is locked by updating its
``NamedTask`` rows, which serialises writers on PostgreSQL (row locks) and on SQLite
(the write lock) alike.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.db.models import F

from ..models import NamedTask, StepStatus, Task, TaskStatus, WorkflowStep
from . import clock, dispatch
from .policy import Policy, policy_for_template

if TYPE_CHECKING:
    from .runner import Loaded

logger = logging.getLogger(__name__)

THROTTLED = "throttled"
RUNNING_TASK_STATUSES = (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)
#: Step states from which a step will still run without an operator.
ACTIVE_STEP_STATUSES = (
    StepStatus.ENQUEUED,
    StepStatus.IN_PROGRESS,
    StepStatus.WAITING_FOR_RETRY,
)


class QueueFull(Exception):
    """The template's ``queue_size`` tasks already wait for their turn."""


def _lock_family(named_task_id: int) -> list[int]:
    """Lock every revision of the template; returns their ids."""
    ns_id, name = NamedTask.objects.values_list("namespace_id", "name").get(pk=named_task_id)
    family = NamedTask.objects.filter(namespace_id=ns_id, name=name)
    ids = sorted(family.values_list("pk", flat=True))
    # An UPDATE takes the row locks (PostgreSQL) or the database write lock (SQLite).
    NamedTask.objects.filter(pk__in=ids).update(updated_at=F("updated_at"))
    return ids


def _lock_task(task_id: int) -> None:
    Task.objects.filter(pk=task_id).update(updated_at=F("updated_at"))


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------


def over_limit(loaded: Loaded, policy: Policy) -> bool:
    """For a just-claimed step: give the claim back if its limits are reached."""
    c = loaded.claim
    with transaction.atomic():
        if policy.max_steps_per_template is not None:
            ids = _lock_family(loaded.step["named_task_id"])
            running = WorkflowStep.objects.filter(
                task__named_task_id__in=ids, status=StepStatus.IN_PROGRESS
            ).count()
            if running > policy.max_steps_per_template:
                return _unclaim(loaded)
        if policy.max_steps_per_task is not None:
            _lock_task(c.task_id)
            running = WorkflowStep.objects.filter(
                task_id=c.task_id, status=StepStatus.IN_PROGRESS
            ).count()
            if running > policy.max_steps_per_task:
                return _unclaim(loaded)
    return False


def _unclaim(loaded: Loaded) -> bool:
    c = loaded.claim
    now = clock.now()
    WorkflowStep.objects.filter(
        pk=c.step_id, status=StepStatus.IN_PROGRESS, attempts=c.attempt
    ).update(
        status=StepStatus.ENQUEUED,
        attempts=F("attempts") - 1,
        worker_id=THROTTLED,
        lease_expires_at=None,
        claimed_at=None,
        enqueued_at=now,
        updated_at=now,
    )
    logger.debug("task %s step %s throttled", c.task_id, c.step_id)
    return True


def release(loaded: Loaded, policy: Policy) -> list[int]:
    """A step of a limited template finished: kick throttled steps that may now run."""
    if policy.max_steps_per_template is not None:
        ns_id, name = NamedTask.objects.values_list("namespace_id", "name").get(
            pk=loaded.step["named_task_id"]
        )
        scope = WorkflowStep.objects.filter(
            task__named_task__namespace_id=ns_id, task__named_task__name=name
        )
        limit = policy.max_steps_per_template
    else:
        scope = WorkflowStep.objects.filter(task_id=loaded.claim.task_id)
        limit = policy.max_steps_per_task or 0
    free = limit - scope.filter(status=StepStatus.IN_PROGRESS).count()
    if free <= 0:
        return []
    ids = list(
        scope.filter(
            status=StepStatus.ENQUEUED,
            worker_id=THROTTLED,
            task__status__in=RUNNING_TASK_STATUSES,
        )
        .order_by("-task__priority", "task_id", "position")
        .values_list("pk", flat=True)[:free]
    )
    dispatch.kick_steps(ids, batch_size=policy.batch_size)
    return ids


# ---------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------


def must_wait(named_task: NamedTask, policy: Policy) -> bool:
    """Inside the creating transaction: whether a new task has to wait its turn.

    Locks the template family until the transaction ends, so concurrent creations
    and admissions count the same running tasks.
    """
    ids = _lock_family(named_task.pk)
    tasks = Task.objects.filter(named_task_id__in=ids)
    running = tasks.filter(status__in=RUNNING_TASK_STATUSES).count()
    assert policy.max_workflows is not None
    if running < policy.max_workflows:
        return False
    if policy.queue_size is not None:
        waiting = tasks.filter(status=TaskStatus.WAITING).count()
        if waiting >= policy.queue_size:
            raise QueueFull(
                f"{policy.queue_size} tasks of {named_task} already wait for their turn "
                f"(performance.concurrency.queue_size)"
            )
    return True


def admit(named_task_id: int) -> list[int]:
    """Start waiting tasks of the template while it runs fewer than its limit.

    Returns the ids of the admitted tasks. Safe to call from anywhere, any time.
    """
    policy = policy_for_template(named_task_id)
    if policy.max_workflows is None:
        waiting = list(
            Task.objects.filter(named_task_id=named_task_id, status=TaskStatus.WAITING).values_list(
                "pk", flat=True
            )
        )
        return _admit_tasks(waiting) if waiting else []
    with transaction.atomic():
        family = _lock_family(named_task_id)
        tasks = Task.objects.filter(named_task_id__in=family)
        free = policy.max_workflows - tasks.filter(status__in=RUNNING_TASK_STATUSES).count()
        if free <= 0:
            return []
        chosen = list(
            tasks.filter(status=TaskStatus.WAITING)
            .order_by("-priority", "created_at", "pk")
            .values_list("pk", flat=True)[:free]
        )
        return _admit_tasks(chosen) if chosen else []


def _admit_tasks(task_ids: list[int]) -> list[int]:
    from .events import Event, emit_on_commit

    now = clock.now()
    admitted = []
    with transaction.atomic():
        for task in Task.objects.filter(pk__in=task_ids, status=TaskStatus.WAITING).select_related(
            "named_task__namespace"
        ):
            changed = Task.objects.filter(pk=task.pk, status=TaskStatus.WAITING).update(
                status=TaskStatus.PENDING,
                deadline_at=deadline(task.named_task.template, now),
                updated_at=now,
            )
            if not changed:
                continue
            roots = WorkflowStep.objects.filter(
                task_id=task.pk, status=StepStatus.PENDING, remaining_parents=0
            )
            root_ids = list(roots.values_list("pk", flat=True))
            roots.update(status=StepStatus.ENQUEUED, enqueued_at=now, updated_at=now)
            emit_on_commit(
                [
                    Event(
                        name="task.admitted",
                        task_id=task.pk,
                        step_id=None,
                        payload={
                            "task_id": task.pk,
                            "task_name": task.named_task.name,
                            "namespace": task.named_task.namespace.name,
                            "version": task.named_task.version,
                        },
                        signal=False,
                        from_status=TaskStatus.WAITING.value,
                        to_status=TaskStatus.PENDING.value,
                    )
                ],
                now,
            )
            policy = policy_for_template(task.named_task_id)
            dispatch.kick_steps(root_ids, task.priority, batch_size=policy.batch_size)
            admitted.append(task.pk)
    if admitted:
        logger.info("admitted waiting tasks %s", admitted)
    return admitted


def deadline(template: dict[str, Any], now: datetime) -> datetime | None:
    """When a task started ``now`` must be done: the smallest of ``task_config.
    timeout_seconds``, ``settings.max_execution_time`` and the technical constraint
    ``max_workflow_duration``."""
    from .policy import technical_constraint

    candidates = [
        (template.get("task_config") or {}).get("timeout_seconds"),
        (template.get("settings") or {}).get("max_execution_time"),
        technical_constraint(template.get("sections") or {}, "max_workflow_duration"),
    ]
    seconds = [
        float(v)
        for v in candidates
        if isinstance(v, int | float) and not isinstance(v, bool) and v > 0
    ]
    return now + timedelta(seconds=min(seconds)) if seconds else None


def task_ended(named_task_id: int, policy: Policy) -> None:
    """After a task of the template ended (on commit): admit the next waiting ones."""
    if policy.max_workflows is None:
        return

    def _run() -> None:
        try:
            admit(named_task_id)
        except Exception:
            logger.exception("could not admit waiting tasks of template %s", named_task_id)

    transaction.on_commit(_run)


# ---------------------------------------------------------------------------
# Failure strategy
# ---------------------------------------------------------------------------


def settle(task_id: int) -> bool:
    """``continue_on_failure``: fail the task once a step failed and none can run.

    Returns True when this call ended the task.
    """
    from .events import Event, emit_on_commit

    now = clock.now()
    with transaction.atomic():
        _lock_task(task_id)
        task = (
            Task.objects.filter(pk=task_id)
            .select_related("named_task__namespace")
            .only(
                "status",
                "failed_steps",
                "named_task_id",
                "named_task__name",
                "named_task__version",
                "named_task__namespace__name",
            )
            .first()
        )
        if task is None or task.status not in RUNNING_TASK_STATUSES or not task.failed_steps:
            return False
        steps = WorkflowStep.objects.filter(task_id=task_id)
        if steps.filter(status__in=ACTIVE_STEP_STATUSES).exists():
            return False
        if steps.filter(status=StepStatus.PENDING, remaining_parents=0).exists():
            return False
        Task.objects.filter(pk=task_id).update(
            status=TaskStatus.ERROR, completed_at=now, updated_at=now
        )
        blocked = steps.filter(status=StepStatus.PENDING).count()
        emit_on_commit(
            [
                Event(
                    name="task.failed",
                    task_id=task_id,
                    step_id=None,
                    payload={
                        "task_id": task_id,
                        "task_name": task.named_task.name,
                        "namespace": task.named_task.namespace.name,
                        "version": task.named_task.version,
                        "failed_steps": task.failed_steps,
                        "blocked_steps": blocked,
                        "failure_strategy": "continue_on_failure",
                    },
                    from_status=task.status,
                    to_status=TaskStatus.ERROR.value,
                )
            ],
            now,
        )
    logger.warning("task %s failed: %s step(s) failed, no step can run", task_id, task.failed_steps)
    task_ended(task.named_task_id, policy_for_template(task.named_task_id))
    return True


def settle_on_commit(task_id: int) -> None:
    def _run() -> None:
        try:
            settle(task_id)
        except Exception:
            logger.exception("could not settle task %s", task_id)

    if connection.in_atomic_block:
        transaction.on_commit(_run)
    else:
        _run()
