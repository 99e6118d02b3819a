"""Recovery and timers, run every ``SWEEP_INTERVAL`` seconds by ``tasker_worker``.

Each pass is safe to run from many processes at once: every change is a
compare-and-set.

* retries whose ``next_attempt_at`` has come are enqueued and kicked;
* in-progress steps whose lease expired are failed as "worker lost" (I8);
* enqueued steps whose kick is older than ``REKICK_AFTER_SECONDS`` are kicked again (I1);
* tasks past their deadline are failed and their unstarted steps cancelled;
* waiting tasks are admitted while their template runs fewer than
  ``max_concurrent_workflows``, and ``continue_on_failure`` tasks in which no step
  can run any more are failed (both normally happen when a step finishes; this is
  the safety net).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction

from ..conf import tasker_settings
from ..models import AttemptOutcome, StepStatus, Task, TaskStatus, WorkflowStep
from . import clock, dispatch

logger = logging.getLogger("tasker_django.sweeper")

RUNNING = (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)
BATCH = 500


@dataclass
class SweepReport:
    retried: int = 0
    lost: int = 0
    rekicked: int = 0
    expired_tasks: int = 0
    admitted: int = 0
    settled: int = 0

    @property
    def total(self) -> int:
        return (
            self.retried
            + self.lost
            + self.rekicked
            + self.expired_tasks
            + self.admitted
            + self.settled
        )


def sweep(now: datetime | None = None) -> SweepReport:
    now = now or clock.now()
    report = SweepReport()
    report.expired_tasks = expire_tasks(now)
    report.lost = recover_lost(now)
    report.retried = enqueue_due_retries(now)
    report.rekicked = rekick_stale(now)
    report.admitted = admit_waiting()
    report.settled = settle_failed()
    return report


def admit_waiting() -> int:
    from .limits import admit

    # order_by() clears the model's ordering: DISTINCT would otherwise also take its
    # columns and return one row per waiting task instead of one per template.
    templates = list(
        Task.objects.filter(status=TaskStatus.WAITING)
        .order_by()
        .values_list("named_task_id", flat=True)
        .distinct()[:BATCH]
    )
    return sum(len(admit(pk)) for pk in templates)


def settle_failed() -> int:
    """``continue_on_failure`` tasks: fail those where a step failed and none can run."""
    from .limits import settle

    ids = list(
        Task.objects.filter(status__in=RUNNING, failed_steps__gt=0).values_list("pk", flat=True)[
            :BATCH
        ]
    )
    return sum(1 for pk in ids if settle(pk))


def enqueue_due_retries(now: datetime) -> int:
    ids = list(
        WorkflowStep.objects.filter(
            status=StepStatus.WAITING_FOR_RETRY,
            next_attempt_at__lte=now,
            task__status__in=RUNNING,
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:BATCH]
    )
    return _enqueue(ids, StepStatus.WAITING_FOR_RETRY, now)


def _enqueue(ids: list[int], from_status: str, now: datetime) -> int:
    if not ids:
        return 0
    done: list[int] = []
    with transaction.atomic():
        for pk in ids:
            if WorkflowStep.objects.filter(pk=pk, status=from_status).update(
                status=StepStatus.ENQUEUED, enqueued_at=now, next_attempt_at=None, updated_at=now
            ):
                done.append(pk)
        dispatch.kick_steps(done)
    return len(done)


def rekick_stale(now: datetime) -> int:
    cutoff = now - timedelta(seconds=float(tasker_settings.REKICK_AFTER_SECONDS))
    stale = list(
        WorkflowStep.objects.filter(
            status=StepStatus.ENQUEUED, enqueued_at__lt=cutoff, task__status__in=RUNNING
        ).values_list("pk", "enqueued_at")[:BATCH]
    )
    if not stale:
        return 0
    done: list[int] = []
    with transaction.atomic():
        for pk, enqueued_at in stale:
            if WorkflowStep.objects.filter(
                pk=pk, status=StepStatus.ENQUEUED, enqueued_at=enqueued_at
            ).update(enqueued_at=now, updated_at=now):
                done.append(pk)
        dispatch.kick_steps(done)
    if done:
        logger.warning("re-kicked %s enqueued steps whose kick was lost: %s", len(done), done)
    return len(done)


def recover_lost(now: datetime) -> int:
    from .runner import Claim, Outcome, finish, load

    lost = list(
        WorkflowStep.objects.filter(
            status=StepStatus.IN_PROGRESS, lease_expires_at__lt=now
        ).values_list("pk", "task_id", "attempts", "worker_id", "claimed_at")[:BATCH]
    )
    count = 0
    for pk, task_id, attempts, worker, claimed_at in lost:
        c = Claim(
            step_id=pk,
            task_id=task_id,
            attempt=attempts,
            claimed_at=claimed_at or now,
            worker=worker,
        )
        # Fence on the lease too: a heartbeat may have just extended it.
        if not WorkflowStep.objects.filter(
            pk=pk, status=StepStatus.IN_PROGRESS, attempts=attempts, lease_expires_at__lt=now
        ).exists():
            continue
        loaded = load(c)
        outcome = Outcome(
            outcome=AttemptOutcome.WORKER_LOST.value,
            error={
                "error_class": "tasker_django.WorkerLost",
                "message": f"worker {worker or '?'} stopped renewing its lease "
                f"(expired before {now.isoformat()})",
                "error_code": "WORKER_LOST",
                "error_category": "infrastructure",
                "context": {"worker": worker},
            },
            retryable=True,
            duration_ms=((now - claimed_at).total_seconds() * 1000) if claimed_at else 0.0,
        )
        if finish(loaded, outcome).stored:
            count += 1
            logger.warning(
                "step %s of task %s: worker %s lost, attempt %s", pk, task_id, worker, attempts
            )
    return count


def expire_tasks(now: datetime) -> int:
    from ..services.operations import expire_task

    ids = list(
        Task.objects.filter(status__in=RUNNING, deadline_at__lt=now).values_list("pk", flat=True)[
            :BATCH
        ]
    )
    return sum(1 for pk in ids if expire_task(pk, now=now))
