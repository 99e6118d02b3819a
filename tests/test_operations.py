"""Operator actions: retry, resolve, complete, cancel; and the waiting reasons."""

from __future__ import annotations

from typing import Any

import pytest

from tasker_django import InvalidTransition, create_task
from tasker_django.models import StepStatus, TaskEvent, TaskStatus, WorkflowStep
from tasker_django.services import operations
from tasker_django.services.inspect import step_states
from tasker_django.testing import run_task_to_completion

pytestmark = pytest.mark.django_db

FAILING = """
name: failing
version: "1.0.0"
step_templates:
  - {name: pay, handler_class: test.permanent}
  - {name: notify, handler_class: test.echo, depends_on_step: pay}
"""


def failed_task(load_template: Any) -> Any:
    load_template(FAILING)
    task = run_task_to_completion(create_task("failing"))
    assert task.status == TaskStatus.ERROR
    return task


def step(task: Any, name: str) -> WorkflowStep:
    return WorkflowStep.objects.get(task=task, name=name)


def test_resolve_step_with_results_unblocks_children(load_template: Any) -> None:
    task = failed_task(load_template)
    operations.resolve_step(
        step(task, "pay").pk, results={"payment_id": "manual"}, actor="ops", reason="paid by phone"
    )
    task = run_task_to_completion(task)
    assert task.status == TaskStatus.COMPLETE
    assert step(task, "pay").status == StepStatus.RESOLVED_MANUALLY
    assert step(task, "notify").results["parents"] == {"pay": {"payment_id": "manual"}}
    action = TaskEvent.objects.get(task=task, name="action.resolve_step")
    assert (action.actor, action.reason, action.kind) == ("ops", "paid by phone", "action")


def test_retry_failed_step_runs_it_again(load_template: Any) -> None:
    task = failed_task(load_template)
    pay = step(task, "pay")
    operations.retry_step(pay.pk, actor="ops", reason="try again")
    pay.refresh_from_db()
    task.refresh_from_db()
    assert pay.status == StepStatus.ENQUEUED and pay.max_attempts > pay.attempts
    assert task.status == TaskStatus.IN_PROGRESS
    task = run_task_to_completion(task)
    assert task.status == TaskStatus.ERROR  # the handler still declines
    assert step(task, "pay").attempts == 2


def test_complete_step_manually(load_template: Any) -> None:
    task = failed_task(load_template)
    operations.complete_step(step(task, "pay").pk, results={"ok": 1}, actor="ops")
    task = run_task_to_completion(task)
    assert task.status == TaskStatus.COMPLETE
    assert step(task, "pay").results == {"ok": 1}


def test_retry_all_failed_steps(load_template: Any) -> None:
    task = failed_task(load_template)
    ids = operations.retry_failed_steps(task.pk, actor="ops")
    assert ids == [step(task, "pay").pk]
    with pytest.raises(InvalidTransition):
        operations.retry_failed_steps(task.pk)


def test_retry_with_downstream_resets_finished_children(load_template: Any) -> None:
    load_template(
        """
name: redo
version: "1.0.0"
step_templates:
  - {name: a, handler_class: test.noop}
  - {name: b, handler_class: test.noop, depends_on_step: a}
  - {name: c, handler_class: test.noop, depends_on_step: b}
"""
    )
    task = run_task_to_completion(create_task("redo"))
    assert task.status == TaskStatus.COMPLETE
    operations.retry_step(step(task, "a").pk, reset_downstream=True, actor="ops")
    assert step(task, "c").status == StepStatus.PENDING
    assert step(task, "b").remaining_parents == 1
    task = run_task_to_completion(task)
    assert task.status == TaskStatus.COMPLETE
    assert [step(task, n).attempts for n in "abc"] == [2, 2, 2]


def test_cancel_task_discards_late_results(load_template: Any) -> None:
    load_template(FAILING.replace("test.permanent", "test.noop").replace("failing", "cancel_me"))
    task = create_task("cancel_me")
    from tasker_django.engine.runner import claim, execute, finish, load

    c = claim(step(task, "pay").pk, "w")
    assert c is not None
    loaded = load(c)
    operations.cancel_task(task.pk, actor="ops", reason="customer asked")
    outcome = execute(loaded)
    assert finish(loaded, outcome).stored is False
    task.refresh_from_db()
    assert task.status == TaskStatus.CANCELLED
    assert step(task, "pay").status == StepStatus.CANCELLED
    assert step(task, "pay").results is None
    with pytest.raises(InvalidTransition):
        operations.cancel_task(task.pk)
    with pytest.raises(InvalidTransition):
        operations.retry_step(step(task, "pay").pk)


def test_refusals_are_clear(load_template: Any) -> None:
    load_template(FAILING.replace("test.permanent", "test.noop").replace("failing", "ok"))
    task = run_task_to_completion(create_task("ok"))
    with pytest.raises(InvalidTransition, match="only failed"):
        operations.retry_step(step(task, "pay").pk)
    with pytest.raises(InvalidTransition, match="already complete"):
        operations.resolve_step(step(task, "pay").pk)
    with pytest.raises(InvalidTransition, match="does not exist"):
        operations.cancel_step(10**9)


def test_cancel_step_blocks_children_and_cancels_task(load_template: Any) -> None:
    load_template(FAILING.replace("test.permanent", "test.noop").replace("failing", "cstep"))
    task = create_task("cstep")
    operations.cancel_step(step(task, "pay").pk, actor="ops")
    task = run_task_to_completion(task)
    assert task.status == TaskStatus.CANCELLED
    assert step(task, "notify").status == StepStatus.PENDING


def test_waiting_reasons(load_template: Any) -> None:
    task = failed_task(load_template)
    reasons = {s.name: s.reason for s in step_states(task)}
    assert reasons["pay"].startswith("failed after 1 of")
    assert "card declined" in reasons["pay"]
    assert reasons["notify"] == "blocked: parent failed: pay"
    load_template(FAILING.replace("test.permanent", "test.flaky").replace("failing", "flaky2"))
    task2 = create_task("flaky2")
    reasons = {s.name: s.reason for s in step_states(task2)}
    assert reasons["pay"].startswith("enqueued at")
    assert reasons["notify"] == "waiting for pay"


def test_operator_actions_send_step_signals(
    load_template: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from tasker_django.signals import step_cancelled, step_resolved, step_retried

    got: list[tuple[str, bool]] = []

    def receiver(sender: Any, event: dict[str, Any], signal: Any, **kw: Any) -> None:
        got.append((event["step_name"], event["manual"]))

    for sig in (step_resolved, step_cancelled, step_retried):
        sig.connect(receiver)
    try:
        task = failed_task(load_template)
        with django_capture_on_commit_callbacks(execute=True):
            operations.retry_step(step(task, "pay").pk, actor="ops")
            operations.cancel_step(step(task, "pay").pk, actor="ops")
        load_template(FAILING.replace("failing", "failing2"))
        task2 = run_task_to_completion(create_task("failing2"))
        with django_capture_on_commit_callbacks(execute=True):
            operations.resolve_step(step(task2, "pay").pk, actor="ops")
    finally:
        for sig in (step_resolved, step_cancelled, step_retried):
            sig.disconnect(receiver)
    assert got == [("pay", True), ("pay", True), ("pay", True)]
    assert TaskEvent.objects.filter(name="step.resolved", task=task2).count() == 1
