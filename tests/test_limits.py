"""Concurrency limits, admission, failure strategy and workflow settings of templates."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tasker_django.engine import dispatch, runner
from tasker_django.engine.sweeper import sweep
from tasker_django.exceptions import TaskQueueFull
from tasker_django.models import StepAttempt, StepStatus, Task, TaskStatus, WorkflowStep
from tasker_django.services.tasks import create_task
from tasker_django.testing import run_task_to_completion

from .conftest import Workers, wait_for

pytestmark = pytest.mark.django_db


def fan_yaml(name: str, width: int, handler: str = "test.noop", **sections: Any) -> str:
    """``width`` independent root steps joined by ``join``."""
    steps: list[dict[str, Any]] = [
        {"name": f"p{i}", "handler_class": handler, "handler_config": {"seconds": 0.6}}
        for i in range(width)
    ]
    steps.append(
        {
            "name": "join",
            "handler_class": "test.noop",
            "depends_on_steps": [f"p{i}" for i in range(width)],
        }
    )
    return yaml.safe_dump({"name": name, "version": "1.0.0", "step_templates": steps, **sections})


def roots(task: Task) -> list[int]:
    return list(
        WorkflowStep.objects.filter(task=task, name__startswith="p")
        .order_by("position")
        .values_list("pk", flat=True)
    )


# -- steps per task -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sections",
    [
        {"workflow_config": {"max_concurrent_steps": 1}},
        {"workflow_config": {"execution_mode": "sequential"}},
        {"constraints": {"technical_constraints": [{"name": "max_concurrent_steps", "value": 1}]}},
        {"performance": {"concurrency": {"max_concurrent_steps": 1}}},
    ],
    ids=["workflow_config", "sequential", "technical_constraints", "performance"],
)
def test_a_claim_over_the_step_limit_is_given_back(load_template: Any, sections: Any) -> None:
    load_template(fan_yaml("limited", 3, **sections))
    task = create_task("limited")
    first, second, third = roots(task)
    with dispatch.suppressed():
        running = runner.claim_and_load(first, "w1")
        assert running is not None
        assert runner.claim_and_load(second, "w2") is None
        step = WorkflowStep.objects.get(pk=second)
        assert (step.status, step.attempts, step.worker_id) == (
            StepStatus.ENQUEUED,
            0,
            "throttled",
        )
        assert runner.claim_and_load(third, "w3") is None

    kicked: list[list[int]] = []
    original = dispatch._safe_send
    dispatch._safe_send = lambda ids, priority=0: kicked.append(ids)  # type: ignore[assignment]
    try:
        outcome = runner.execute(running)
        runner.finish(running, outcome)
    finally:
        dispatch._safe_send = original  # type: ignore[assignment]
    # One slot freed: the first throttled step (by position) is kicked again.
    assert kicked == [[second]]
    assert StepAttempt.objects.filter(task=task).count() == 1


def test_unlimited_templates_claim_in_parallel(load_template: Any) -> None:
    load_template(fan_yaml("free", 3))
    task = create_task("free")
    with dispatch.suppressed():
        claimed = [runner.claim_and_load(pk, f"w{pk}") for pk in roots(task)]
    assert all(claimed)
    assert WorkflowStep.objects.filter(task=task, status=StepStatus.IN_PROGRESS).count() == 3


def test_a_limited_task_still_runs_to_completion(load_template: Any) -> None:
    load_template(fan_yaml("seq", 4, workflow_config={"execution_mode": "sequential"}))
    task = run_task_to_completion(create_task("seq"))
    assert task.status == TaskStatus.COMPLETE
    assert task.completed_steps == 5


@pytest.mark.workers
@pytest.mark.django_db(transaction=True)
def test_real_workers_never_run_more_steps_than_the_limit(
    workers: Workers, load_template: Any
) -> None:
    """2 worker processes of 2 each, 6 parallel 0.6 s steps, max 2 at once."""
    load_template(
        fan_yaml(
            "two_at_once", 6, handler="test.sleepy", workflow_config={"max_concurrent_steps": 2}
        )
    )
    workers.start(1)
    workers.start(1)
    task = create_task("two_at_once")
    wait_for(
        lambda: Task.objects.get(pk=task.pk).status not in (TaskStatus.PENDING, "in_progress"),
        timeout=90,
    )
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETE, workers.output()[-3000:]
    spans = [
        (a.started_at, a.finished_at)
        for a in StepAttempt.objects.filter(task=task, step__name__startswith="p")
    ]
    assert len(spans) == 6  # no attempt was counted for a throttled claim
    most = max(sum(1 for s, f in spans if s <= start < f) for start, _ in spans)
    assert most <= 2


# -- workflows per template -----------------------------------------------------------------


def test_tasks_over_max_concurrent_workflows_wait_their_turn(load_template: Any) -> None:
    load_template(
        fan_yaml(
            "one_at_a_time",
            1,
            performance={"concurrency": {"max_concurrent_workflows": 1, "queue_size": 2}},
            task_config={"timeout_seconds": 60},
        )
    )
    with dispatch.suppressed():
        first = create_task("one_at_a_time")
        second = create_task("one_at_a_time")
        urgent = create_task("one_at_a_time", priority="high")
        with pytest.raises(TaskQueueFull, match="queue_size"):
            create_task("one_at_a_time")
    assert first.status == TaskStatus.PENDING and first.deadline_at is not None
    assert second.status == urgent.status == TaskStatus.WAITING
    assert second.deadline_at is None
    assert not WorkflowStep.objects.filter(
        task__in=[second, urgent], status=StepStatus.ENQUEUED
    ).exists()
    assert Task.objects.count() == 3

    run_task_to_completion(first)
    # The higher priority task goes first, although it was created later.
    urgent.refresh_from_db()
    second.refresh_from_db()
    assert urgent.status in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS, TaskStatus.COMPLETE)
    assert second.status == TaskStatus.WAITING
    assert urgent.deadline_at is not None
    run_task_to_completion(urgent)
    run_task_to_completion(second)
    second.refresh_from_db()
    assert second.status == TaskStatus.COMPLETE
    names = list(second.events.values_list("name", flat=True))
    assert names[:2] == ["task.created", "task.admitted"]


def test_the_sweeper_admits_once_per_template_however_many_tasks_wait(
    load_template: Any, monkeypatch: Any
) -> None:
    from tasker_django.engine import limits

    load_template(
        fan_yaml(
            "one_at_a_time",
            1,
            performance={"concurrency": {"max_concurrent_workflows": 1, "queue_size": 20}},
        )
    )
    with dispatch.suppressed():
        tasks = [create_task("one_at_a_time") for _ in range(8)]
    assert Task.objects.filter(status=TaskStatus.WAITING).count() == 7
    admitted: list[int] = []
    real_admit = limits.admit

    def counting_admit(named_task_id: int) -> list[int]:
        admitted.append(named_task_id)
        return real_admit(named_task_id)

    monkeypatch.setattr(limits, "admit", counting_admit)
    with dispatch.suppressed():
        assert sweep().admitted == 0  # the first task still runs
    # One admission check for the template, not one per waiting task (a DISTINCT over
    # the model's default ordering kept every row).
    assert admitted == [tasks[0].named_task_id]


def test_cancelling_a_waiting_task_works(load_template: Any) -> None:
    from tasker_django.services.operations import cancel_task

    load_template(fan_yaml("cap", 1, performance={"concurrency": {"max_concurrent_workflows": 1}}))
    with dispatch.suppressed():
        create_task("cap")
        waiting = create_task("cap")
    assert waiting.status == TaskStatus.WAITING
    assert cancel_task(waiting.pk, reason="not needed").status == TaskStatus.CANCELLED


# -- failure strategy -----------------------------------------------------------------------

BRANCHES = {
    "name": "branches",
    "version": "1.0.0",
    "step_templates": [
        {"name": "a", "handler_class": "test.noop"},
        {"name": "bad", "handler_class": "test.permanent", "depends_on_step": "a"},
        {"name": "after_bad", "handler_class": "test.noop", "depends_on_step": "bad"},
        {"name": "c", "handler_class": "test.noop", "depends_on_step": "a"},
        {"name": "d", "handler_class": "test.noop", "depends_on_step": "c"},
    ],
}


def _statuses(task: Task) -> dict[str, str]:
    return dict(WorkflowStep.objects.filter(task=task).values_list("name", "status"))


def test_stop_on_first_failure_is_the_default(load_template: Any) -> None:
    load_template(yaml.safe_dump(BRANCHES))
    task = run_task_to_completion(create_task("branches"))
    assert task.status == TaskStatus.ERROR
    assert _statuses(task)["d"] != StepStatus.COMPLETE


def test_continue_on_failure_runs_independent_branches(load_template: Any) -> None:
    load_template(
        yaml.safe_dump({**BRANCHES, "workflow_config": {"failure_strategy": "continue_on_failure"}})
    )
    task = run_task_to_completion(create_task("branches"))
    statuses = _statuses(task)
    assert statuses == {
        "a": StepStatus.COMPLETE,
        "bad": StepStatus.ERROR,
        "after_bad": StepStatus.PENDING,
        "c": StepStatus.COMPLETE,
        "d": StepStatus.COMPLETE,
    }
    assert task.status == TaskStatus.ERROR
    assert task.completed_at is not None
    failed = task.events.get(name="task.failed")
    assert failed.payload["blocked_steps"] == 1


def test_the_sweeper_settles_a_continue_on_failure_task(load_template: Any) -> None:
    """If the worker died before settling, the sweeper fails the task."""
    load_template(
        yaml.safe_dump({**BRANCHES, "workflow_config": {"failure_strategy": "continue_on_failure"}})
    )
    task = create_task("branches")
    WorkflowStep.objects.filter(task=task).update(status=StepStatus.COMPLETE)
    WorkflowStep.objects.filter(task=task, name__in=["bad"]).update(status=StepStatus.ERROR)
    WorkflowStep.objects.filter(task=task, name="after_bad").update(status=StepStatus.PENDING)
    Task.objects.filter(pk=task.pk).update(
        status=TaskStatus.IN_PROGRESS, failed_steps=1, completed_steps=3
    )
    assert sweep().settled == 1
    task.refresh_from_db()
    assert task.status == TaskStatus.ERROR


# -- step and task settings -----------------------------------------------------------------


def test_step_timeout_buffer_extends_the_timeout(load_template: Any) -> None:
    step = {"timeout_seconds": 0.2, "handler_config": {"seconds": 0.5}}
    load_template(
        yaml.safe_dump(
            {
                "name": "tight",
                "version": "1.0.0",
                "step_templates": [{"name": "s", "handler_class": "test.sleepy", **step}],
            }
        )
    )
    load_template(
        yaml.safe_dump(
            {
                "name": "buffered",
                "version": "1.0.0",
                "workflow_config": {"step_timeout_buffer": 1},
                "step_templates": [{"name": "s", "handler_class": "test.sleepy", **step}],
            }
        )
    )
    tight = create_task("tight")
    with dispatch.suppressed():
        loaded = runner.claim_and_load(WorkflowStep.objects.get(task=tight).pk, "w")
    assert loaded is not None
    assert runner.execute(loaded).outcome == "timeout"
    assert run_task_to_completion(create_task("buffered")).status == TaskStatus.COMPLETE


@pytest.mark.parametrize(("strict", "attempts"), [(True, 1), (False, 3)])
def test_strict_error_handling_makes_unclassified_errors_permanent(
    load_template: Any, strict: bool, attempts: int
) -> None:
    settings = {"error_handling": "strict"} if strict else {}
    load_template(
        yaml.safe_dump(
            {
                "name": f"strict_{strict}",
                "version": "1.0.0",
                "settings": {**settings, "default_retry_limit": 3},
                "step_templates": [
                    {
                        "name": "s",
                        "handler_class": "test.raiser",
                        "handler_config": {"raise": "ValueError"},
                    }
                ],
            }
        )
    )
    task = run_task_to_completion(create_task(f"strict_{strict}"))
    assert task.status == TaskStatus.ERROR
    assert StepAttempt.objects.filter(task=task).count() == attempts


def test_task_config_priority_retryable_and_duration(load_template: Any) -> None:
    load_template(
        yaml.safe_dump(
            {
                "name": "configured",
                "version": "1.0.0",
                "task_config": {"priority": "high", "retryable": False, "timeout_seconds": 600},
                "constraints": {
                    "technical_constraints": [{"name": "max_workflow_duration", "value": 120}]
                },
                "step_templates": [
                    {"name": "s", "handler_class": "test.noop"},
                    {"name": "t", "handler_class": "test.noop", "default_retryable": True},
                ],
            }
        )
    )
    with dispatch.suppressed():
        task = create_task("configured")
        explicit = create_task("configured", priority=-5)
    assert task.priority == 10 and explicit.priority == -5
    assert (task.deadline_at - task.created_at).total_seconds() == pytest.approx(120)
    limits = dict(WorkflowStep.objects.filter(task=task).values_list("name", "max_attempts"))
    assert limits["s"] == 1
    assert limits["t"] > 1


def test_batching_sends_kicks_in_batches(load_template: Any) -> None:
    load_template(
        fan_yaml("batched", 5, performance={"batching": {"enabled": True, "batch_size": 2}})
    )
    sent: list[list[int]] = []
    original = dispatch._safe_send
    dispatch._safe_send = lambda ids, priority=0: sent.append(ids)  # type: ignore[assignment]
    try:
        task = create_task("batched")
    finally:
        dispatch._safe_send = original  # type: ignore[assignment]
    assert [len(batch) for batch in sent] == [2, 2, 1]
    assert sorted(pk for batch in sent for pk in batch) == sorted(roots(task))


def test_on_redis_kicks_of_higher_priority_tasks_go_first(
    load_template: Any, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """task_config.priority orders dispatch on Redis: its workers pop from the head."""
    calls: list[tuple[str, int]] = []

    class FakeRedis:
        def lpush(self, key: str, *packages: str) -> None:
            calls.append(("lpush", len(packages)))

        def rpush(self, key: str, *packages: str) -> None:
            calls.append(("rpush", len(packages)))

    class FakeBroker:
        list_key = "tasker"
        connection = FakeRedis()

    monkeypatch.setattr(dispatch, "get_broker", lambda: FakeBroker())
    load_template(fan_yaml("urgent", 2, task_config={"priority": "high"}))
    load_template(fan_yaml("routine", 2))
    with django_capture_on_commit_callbacks(execute=True):  # Redis kicks go on commit
        create_task("routine")
        create_task("urgent")
        create_task("urgent", priority="low")
    assert calls == [("rpush", 2), ("lpush", 2), ("rpush", 2)]
