"""error_handling: classification by exception class name, and escalation rules."""

from __future__ import annotations

from typing import Any

import pytest

from tasker_django import create_task
from tasker_django.models import StepAttempt, TaskEvent, TaskStatus, WorkflowStep
from tasker_django.testing import run_task_to_completion

from .testapp import tasker_handlers

pytestmark = pytest.mark.django_db

TEMPLATE = """
name: {name}
version: "1.0.0"
step_templates:
  - name: charge
    handler_class: test.raiser
    default_retry_limit: 3
    handler_config: {{raise: {error}, fail_times: {fail_times}}}
error_handling:
  permanent_errors: [ValidationError, CardDeclinedError]
  retryable_errors: [NetworkError, TimeoutError]
  escalation_rules:
    - condition: "retry_count >= 2"
      action: escalate_to_support
    - condition: "payment_amount > 1000 AND error_type == 'card_declined'"
      action: escalate_to_manual_review
    - condition: "error_type == 'fraud_detected'"
      action: escalate_to_security
"""


def run(load_template: Any, name: str, error: str, fail_times: int = 99, **context: Any) -> Any:
    load_template(TEMPLATE.format(name=name, error=error, fail_times=fail_times))
    return run_task_to_completion(create_task(name, context=context))


def test_listed_permanent_error_is_not_retried(load_template: Any) -> None:
    task = run(load_template, "perm", "CardDeclinedError")
    step = WorkflowStep.objects.get(task=task)
    assert (task.status, step.attempts) == (TaskStatus.ERROR, 1)
    attempt = StepAttempt.objects.get(step=step)
    assert attempt.outcome == "permanent_error"
    assert attempt.error_class.endswith("CardDeclinedError")


def test_listed_retryable_error_is_retried(load_template: Any) -> None:
    task = run(load_template, "retry", "NetworkError", fail_times=1)
    assert task.status == TaskStatus.COMPLETE
    assert WorkflowStep.objects.get(task=task).attempts == 2


def test_escalation_rules_record_signal_and_call_actions(
    load_template: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.TASKER = {
        **settings.TASKER,
        "ESCALATION_ACTIONS": {
            "escalate_to_manual_review": "tests.testapp.tasker_handlers.record_escalation"
        },
    }
    tasker_handlers.ESCALATIONS.clear()
    with django_capture_on_commit_callbacks(execute=True):
        task = run(load_template, "esc", "CardDeclinedError", payment_amount=5000)
    events = TaskEvent.objects.filter(task=task, name="step.escalated")
    assert [e.payload["action"] for e in events] == ["escalate_to_manual_review"]
    assert events[0].kind == "event"
    assert [e["action"] for e in tasker_handlers.ESCALATIONS] == ["escalate_to_manual_review"]
    assert tasker_handlers.ESCALATIONS[0]["step_name"] == "charge"


def test_retry_count_escalation_fires_from_the_second_failure(load_template: Any) -> None:
    task = run(load_template, "esc2", "ValueError")
    actions = list(
        TaskEvent.objects.filter(task=task, name="step.escalated").values_list(
            "payload__attempt", flat=True
        )
    )
    assert actions == [2, 3]  # retry_count >= 2 on the 2nd and 3rd failed attempt


def test_small_card_declines_do_not_escalate(load_template: Any) -> None:
    task = run(load_template, "esc3", "CardDeclinedError", payment_amount=10)
    assert not TaskEvent.objects.filter(task=task, name="step.escalated").exists()


def test_unregistered_escalation_action_is_a_check_warning(
    load_template: Any, settings: Any
) -> None:
    from tasker_django.checks import check_loaded_handlers

    load_template(TEMPLATE.format(name="w005", error="ValueError", fail_times=1))
    settings.TASKER = {**settings.TASKER, "ESCALATION_ACTIONS": {"escalate_to_support": "x.y"}}
    messages = [m for m in check_loaded_handlers(databases=["default"]) if m.id.endswith("W005")]
    assert sorted(m.msg.split("'")[1] for m in messages) == [
        "escalate_to_manual_review",
        "escalate_to_security",
    ]
