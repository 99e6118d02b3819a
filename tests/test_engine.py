"""Workflow behaviour through the engine, run inline (run_task_to_completion)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tasker_django import create_task
from tasker_django.engine import clock as engine_clock
from tasker_django.engine import dispatch
from tasker_django.engine.runner import claim, run_step_loop
from tasker_django.engine.sweeper import sweep
from tasker_django.models import (
    AttemptOutcome,
    StepAttempt,
    StepStatus,
    TaskEvent,
    TaskStatus,
    WorkflowStep,
)
from tasker_django.signals import step_completed, step_failed, task_completed, task_failed
from tasker_django.testing import FakeClock, run_task_to_completion

from .conftest import chain_yaml

pytestmark = pytest.mark.django_db

DIAMOND = """
name: diamond
version: "1.0.0"
step_templates:
  - {name: a, handler_class: test.echo}
  - {name: b, handler_class: test.echo, depends_on_step: a}
  - {name: c, handler_class: test.echo, depends_on_step: a}
  - {name: d, handler_class: test.echo, depends_on_steps: [b, c]}
"""

TREE = """
name: tree
version: "1.0.0"
step_templates:
  - {name: root, handler_class: test.noop}
  - {name: l, handler_class: test.noop, depends_on_step: root}
  - {name: r, handler_class: test.noop, depends_on_step: root}
  - {name: ll, handler_class: test.noop, depends_on_step: l}
  - {name: lr, handler_class: test.noop, depends_on_step: l}
  - {name: rl, handler_class: test.noop, depends_on_step: r}
"""

MIXED = """
name: mixed
version: "1.0.0"
step_templates:
  - {name: a, handler_class: test.noop}
  - {name: b, handler_class: test.noop}
  - {name: c, handler_class: test.noop, depends_on_steps: [a, b]}
  - {name: d, handler_class: test.noop, depends_on_step: a}
  - {name: e, handler_class: test.noop, depends_on_steps: [c, d]}
  - {name: f, handler_class: test.noop}
"""


def steps_by_name(task: Any) -> dict[str, WorkflowStep]:
    return {s.name: s for s in WorkflowStep.objects.filter(task=task)}


def test_linear_chain_runs_in_order(load_template: Any) -> None:
    load_template(chain_yaml("chain", 5))
    task = run_task_to_completion(create_task("chain"))
    assert task.status == TaskStatus.COMPLETE
    assert task.completed_steps == 5 == task.total_steps
    assert task.completed_at is not None and task.started_at is not None
    steps = steps_by_name(task)
    order = sorted(steps.values(), key=lambda s: s.completed_at)
    assert [s.name for s in order] == ["s0", "s1", "s2", "s3", "s4"]
    assert steps["s3"].results == {"step": "s3", "parents": ["s2"]}
    assert all(s.attempts == 1 for s in steps.values())


def test_diamond_join_sees_both_parents(load_template: Any) -> None:
    load_template(DIAMOND)
    task = run_task_to_completion(create_task("diamond", context={"value": 7}))
    assert task.status == TaskStatus.COMPLETE
    d = steps_by_name(task)["d"]
    assert set(d.results["parents"]) == {"b", "c"}
    assert d.results["parents"]["b"]["value"] == 7
    assert StepAttempt.objects.filter(step=d).count() == 1


@pytest.mark.parametrize("text,count", [(TREE, 6), (MIXED, 6)])
def test_tree_and_mixed_dags_complete(load_template: Any, text: str, count: int) -> None:
    named = load_template(text)
    task = run_task_to_completion(create_task(named.name))
    assert task.status == TaskStatus.COMPLETE
    assert WorkflowStep.objects.filter(task=task, status=StepStatus.COMPLETE).count() == count
    for step in WorkflowStep.objects.filter(task=task):
        for edge in step.parent_edges.select_related("from_step"):
            assert edge.from_step.completed_at <= step.claimed_at


def test_retry_then_succeed_records_each_attempt(load_template: Any) -> None:
    load_template(
        chain_yaml(
            "flaky",
            1,
            handler="test.flaky",
            handler_config={"fail_times": 2},
            default_retry_limit=3,
        )
    )
    fake = FakeClock()
    start = fake.now()
    task = run_task_to_completion(create_task("flaky"), clock=fake)
    assert task.status == TaskStatus.COMPLETE
    step = WorkflowStep.objects.get(task=task)
    assert step.attempts == 3
    outcomes = list(StepAttempt.objects.filter(step=step).values_list("outcome", flat=True))
    assert outcomes == ["retryable_error", "retryable_error", "success"]
    assert fake.now() > start  # the fake clock moved past the backoff
    names = list(TaskEvent.objects.filter(task=task).values_list("name", flat=True))
    assert names.count("step.retried") == 2


def test_retry_limit_counts_all_attempts(load_template: Any) -> None:
    load_template(
        chain_yaml(
            "exhaust",
            1,
            handler="test.flaky",
            handler_config={"fail_times": 10},
            default_retry_limit=3,
        )
    )
    task = run_task_to_completion(create_task("exhaust"))
    assert task.status == TaskStatus.ERROR
    step = WorkflowStep.objects.get(task=task)
    assert step.status == StepStatus.ERROR
    assert step.attempts == 3
    assert StepAttempt.objects.filter(step=step).count() == 3


def test_not_retryable_means_one_attempt(load_template: Any) -> None:
    load_template(
        chain_yaml(
            "once",
            1,
            handler="test.flaky",
            handler_config={"fail_times": 5},
            default_retryable=False,
            default_retry_limit=5,
        )
    )
    task = run_task_to_completion(create_task("once"))
    step = WorkflowStep.objects.get(task=task)
    assert (task.status, step.attempts, step.max_attempts) == (TaskStatus.ERROR, 1, 1)


def test_plain_exception_is_retryable_and_recorded(load_template: Any) -> None:
    load_template(chain_yaml("crashy", 1, handler="test.crashy", handler_config={"fail_times": 1}))
    task = run_task_to_completion(create_task("crashy"))
    assert task.status == TaskStatus.COMPLETE
    first = StepAttempt.objects.get(task=task, attempt_number=1)
    assert first.outcome == AttemptOutcome.RETRYABLE_ERROR
    assert first.error_class == "builtins.ValueError"
    assert "plain failure on attempt 1" in first.error_message


def test_permanent_error_fails_task_and_stops_downstream(
    load_template: Any, django_capture_on_commit_callbacks: Any
) -> None:
    load_template(
        """
name: perm
version: "1.0.0"
step_templates:
  - {name: pay, handler_class: test.permanent, default_retry_limit: 5}
  - {name: notify, handler_class: test.noop, depends_on_step: pay}
  - {name: side, handler_class: test.noop}
"""
    )
    failed: list[dict[str, Any]] = []

    def receiver(sender: Any, event: dict[str, Any], **kw: Any) -> None:
        failed.append(event)

    task_failed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            task = run_task_to_completion(create_task("perm"))
    finally:
        task_failed.disconnect(receiver)
    assert task.status == TaskStatus.ERROR
    steps = steps_by_name(task)
    assert steps["pay"].status == StepStatus.ERROR and steps["pay"].attempts == 1
    assert steps["pay"].last_error["error_code"] == "CARD_DECLINED"
    assert steps["notify"].status == StepStatus.PENDING
    attempt = StepAttempt.objects.get(step=steps["pay"])
    assert (attempt.outcome, attempt.error_code, attempt.error_category) == (
        "permanent_error",
        "CARD_DECLINED",
        "payment",
    )
    assert attempt.error_context == {"step": "pay"}
    assert task.failed_steps == 1
    assert [e["task_id"] for e in failed] == [task.pk]


def test_timeout_stops_handler_and_counts_as_retryable(load_template: Any) -> None:
    load_template(
        chain_yaml(
            "slow",
            1,
            handler="test.sleepy",
            timeout_seconds=0.3,
            default_retry_limit=2,
            handler_config={"seconds": 5, "sleep_times": 1},
        )
    )
    task = run_task_to_completion(create_task("slow"))
    assert task.status == TaskStatus.COMPLETE
    first = StepAttempt.objects.get(task=task, attempt_number=1)
    assert first.outcome == AttemptOutcome.TIMEOUT
    assert first.duration_ms < 3000
    assert "timeout" in first.error_message


def test_non_json_result_is_permanent_error(load_template: Any) -> None:
    load_template(chain_yaml("bad", 1, handler="test.bad_result", default_retry_limit=3))
    task = run_task_to_completion(create_task("bad"))
    step = WorkflowStep.objects.get(task=task)
    assert step.status == StepStatus.ERROR and step.attempts == 1
    assert "not JSON" in step.last_error["message"]


def test_retry_after_is_used_and_capped(load_template: Any) -> None:
    load_template(
        chain_yaml(
            "after",
            1,
            handler="test.flaky",
            default_retry_limit=2,
            handler_config={"fail_times": 1, "retry_after": 1000},
            retry_backoff={"initial_delay": 1, "max_delay": 60, "multiplier": 2, "jitter": False},
        )
    )
    task = create_task("after")
    fake = FakeClock()
    with engine_clock.frozen(fake.now):
        step_id = WorkflowStep.objects.get(task=task).pk
        from tasker_django.engine import dispatch

        with dispatch.suppressed():
            run_step_loop(step_id, worker="t", eager=False)
    step = WorkflowStep.objects.get(pk=step_id)
    assert step.status == StepStatus.WAITING_FOR_RETRY
    assert step.next_attempt_at == fake.now() + timedelta(seconds=60)


def test_duplicate_delivery_does_nothing(load_template: Any) -> None:
    load_template(chain_yaml("dup", 1))
    task = create_task("dup")
    step = WorkflowStep.objects.get(task=task)
    first = claim(step.pk, "w1")
    assert first is not None and first.attempt == 1
    assert claim(step.pk, "w2") is None
    step.refresh_from_db()
    assert (step.attempts, step.worker_id) == (1, "w1")


def test_signals_fire_after_commit(
    load_template: Any, django_capture_on_commit_callbacks: Any
) -> None:
    load_template(chain_yaml("sig", 2))
    got: list[str] = []
    receivers = [
        (step_completed, lambda sender, event, **kw: got.append(f"step:{event['step_name']}")),
        (task_completed, lambda sender, event, **kw: got.append("task")),
        (step_failed, lambda sender, event, **kw: got.append("failed")),
    ]
    for sig, fn in receivers:
        sig.connect(fn, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            run_task_to_completion(create_task("sig"))
        assert got == []  # nothing is signalled before the transaction commits
        for callback in callbacks:
            callback()
    finally:
        for sig, fn in receivers:
            sig.disconnect(fn)
    assert got == ["step:s0", "step:s1", "task"]


def test_stored_events_carry_the_signalled_payloads(
    load_template: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """The event log keeps what the signals sent (on PostgreSQL the finish statement
    derives step.completed's and task.completed's payloads from step.started's)."""
    load_template(chain_yaml("logged", 2))
    sent: dict[str, list[dict[str, Any]]] = {}
    receivers = [
        (sig, lambda sender, event, name=name, **kw: sent.setdefault(name, []).append(event))
        for sig, name in ((step_completed, "step.completed"), (task_completed, "task.completed"))
    ]
    for sig, fn in receivers:
        sig.connect(fn, weak=False)
    try:
        task = create_task("logged")
        with django_capture_on_commit_callbacks(execute=True):
            s0 = WorkflowStep.objects.get(task=task, name="s0").pk
            assert run_step_loop(s0, worker="w", eager=True) == 2
    finally:
        for sig, fn in receivers:
            sig.disconnect(fn)
    stored = {
        name: list(
            TaskEvent.objects.filter(task=task, name=name)
            .order_by("id")
            .values_list("payload", flat=True)
        )
        for name in ("step.started", "step.completed", "task.completed")
    }
    assert stored["step.completed"] == sent["step.completed"]
    assert stored["task.completed"] == sent["task.completed"]
    assert set(stored["task.completed"][0]) == {"task_id", "task_name", "namespace", "version"}
    assert [p["step_name"] for p in stored["step.started"]] == ["s0", "s1"]
    for started, completed in zip(stored["step.started"], stored["step.completed"], strict=True):
        assert {**started, "duration_ms": completed["duration_ms"]} == completed
        assert isinstance(completed["duration_ms"], float | int) and completed["duration_ms"] >= 0


def test_finishing_a_step_costs_the_same_in_small_and_large_tasks(load_template: Any) -> None:
    """I9: statements per finished step (kick included) do not grow with the task size."""
    from tasker_django.engine import dispatch

    counts = []
    for n in (4, 400):
        load_template(chain_yaml(f"size{n}", n))
        task = create_task(f"size{n}")
        with dispatch.suppressed():
            run_step_loop(WorkflowStep.objects.get(task=task, name="s0").pk, eager=False)
        middle = WorkflowStep.objects.get(task=task, name="s1")
        with CaptureQueriesContext(connection) as ctx:
            assert run_step_loop(middle.pk, worker="q", eager=False) == 1
        statements = [
            q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]
        ]  # savepoints come from the test's own transaction
        counts.append(len(statements))
    assert counts[0] == counts[1]
    assert counts[0] <= 8, counts


def test_deadline_fails_task_and_cancels_unstarted(load_template: Any) -> None:
    named = load_template(
        """
name: deadline
version: "1.0.0"
task_config: {timeout_seconds: 10}
step_templates:
  - {name: a, handler_class: test.noop}
  - {name: b, handler_class: test.noop, depends_on_step: a}
"""
    )
    task = create_task(named.name)
    assert task.deadline_at is not None
    fake = FakeClock(task.deadline_at + timedelta(seconds=1))
    with engine_clock.frozen(fake.now):
        report = sweep()
    assert report.expired_tasks == 1
    task.refresh_from_db()
    assert task.status == TaskStatus.ERROR
    assert set(WorkflowStep.objects.filter(task=task).values_list("status", flat=True)) == {
        StepStatus.CANCELLED
    }


def test_lost_worker_is_retried(load_template: Any) -> None:
    load_template(chain_yaml("lost", 1))
    task = create_task("lost")
    step = WorkflowStep.objects.get(task=task)
    assert claim(step.pk, "ghost") is not None  # a worker that then dies
    fake = FakeClock()
    fake.advance(3600)
    task = run_task_to_completion(task, clock=fake)
    assert task.status == TaskStatus.COMPLETE
    outcomes = list(StepAttempt.objects.filter(task=task).values_list("outcome", flat=True))
    assert outcomes == ["worker_lost", "success"]
    lost = StepAttempt.objects.get(task=task, attempt_number=1)
    assert lost.worker == "ghost" and lost.error_code == "WORKER_LOST"


def test_heartbeat_renews_lease_and_handler_logs_carry_ids(load_template: Any, caplog: Any) -> None:
    load_template(chain_yaml("hb", 1, handler="test.heartbeat"))
    from tasker_django.engine import dispatch

    task = create_task("hb")
    step = WorkflowStep.objects.get(task=task)
    with caplog.at_level("INFO", logger="tasker_django.handlers"), dispatch.suppressed():
        run_step_loop(step.pk, worker="w", eager=False)  # real clock: the lease moves
    step.refresh_from_db()
    assert step.results == {"renewed": True}
    lines = [r.getMessage() for r in caplog.records if "charging card" in r.getMessage()]
    assert lines == [f"[task {task.pk} step {step.pk}] charging card"]
    record = next(r for r in caplog.records if "charging card" in r.getMessage())
    assert (record.task_id, record.step_id) == (task.pk, step.pk)


def test_deleting_a_task_deletes_its_history(load_template: Any) -> None:
    """History tables have no database constraints (migration 0007): the ORM cascades."""
    from tasker_django.models import StepAttempt, TaskEvent

    load_template(chain_yaml("doomed", 3))
    task = run_task_to_completion(create_task("doomed"))
    kept = run_task_to_completion(create_task("doomed"))
    assert StepAttempt.objects.filter(task=task).count() == 3
    assert TaskEvent.objects.filter(task=task).exists()
    task.delete()
    assert not StepAttempt.objects.filter(task_id=task.pk).exists()
    assert not TaskEvent.objects.filter(task_id=task.pk).exists()
    assert StepAttempt.objects.filter(task=kept).count() == 3


def test_timeouts_hold_through_an_eager_run_and_the_alarm_handler_is_restored(
    load_template: Any,
) -> None:
    """run_step_loop installs its SIGALRM handler once for all the steps it runs: a late
    step still times out, and the handler in place before (django-q2's) comes back."""
    import signal

    import yaml

    steps = [
        {"name": "a", "handler_class": "test.noop"},
        {"name": "b", "handler_class": "test.noop", "depends_on_step": "a"},
        {
            "name": "c",
            "handler_class": "test.sleepy",
            "depends_on_step": "b",
            "timeout_seconds": 0.3,
            "handler_config": {"seconds": 5, "sleep_times": 1},
        },
    ]
    load_template(yaml.safe_dump({"name": "late", "version": "1.0.0", "step_templates": steps}))

    def before(signum: int, frame: Any) -> None:
        raise AssertionError("the outer handler must not see the step's alarm")

    previous = signal.signal(signal.SIGALRM, before)
    try:
        with dispatch.suppressed():
            task = create_task("late")
            ran = run_step_loop(steps_by_name(task)["a"].pk, worker="t", eager=True)
        assert signal.getsignal(signal.SIGALRM) is before
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert ran == 3
    late = StepAttempt.objects.get(step=steps_by_name(task)["c"])
    assert late.outcome == AttemptOutcome.TIMEOUT and late.duration_ms < 3000
    assert steps_by_name(task)["c"].status == StepStatus.WAITING_FOR_RETRY
