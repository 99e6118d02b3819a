"""Run a task's steps inline, deterministically, without a broker or workers."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from ..engine import clock as engine_clock
from ..engine import dispatch
from ..engine.runner import run_step_loop
from ..engine.sweeper import sweep
from ..models import StepStatus, Task, TaskStatus, WorkflowStep


class FakeClock:
    """A clock that only moves when told (``advance``) or when the runner jumps to a retry."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or timezone.now()

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> datetime:
        self.current += timedelta(seconds=seconds)
        return self.current

    def set(self, when: datetime) -> None:
        if when > self.current:
            self.current = when


def run_task_to_completion(
    task: Task, *, clock: FakeClock | None = None, max_steps: int = 100_000
) -> Task:
    """Run ``task`` until nothing more can happen, then return it refreshed.

    Steps run one at a time in position order in this thread, through the same
    claim/finish code as the workers. Backoff costs no time: when only retries are
    left, the fake clock jumps to the earliest one. Handlers' own timeouts still
    use real time.
    """
    fake = clock or FakeClock()
    with engine_clock.frozen(fake.now), dispatch.suppressed():
        for _ in range(max_steps):
            sweep(now=fake.now())
            task.refresh_from_db(fields=["status"])
            if task.status not in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS):
                break
            steps = WorkflowStep.objects.filter(task=task)
            next_id = (
                steps.filter(status=StepStatus.ENQUEUED)
                .order_by("position", "pk")
                .values_list("pk", flat=True)
                .first()
            )
            if next_id is not None:
                run_step_loop(next_id, worker="inline", eager=False)
                continue
            due = (
                steps.filter(status=StepStatus.WAITING_FOR_RETRY)
                .order_by("next_attempt_at")
                .values_list("next_attempt_at", flat=True)
                .first()
            )
            if due is None:
                break
            fake.set(due)
    task.refresh_from_db()
    return task
