"""Custom events declared in templates, published by handlers with self.publish_event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tasker_django import StepHandler, create_task
from tasker_django.models import StepStatus, TaskEvent, TaskStatus, WorkflowStep
from tasker_django.signals import custom_event
from tasker_django.testing import run_task_to_completion

pytestmark = pytest.mark.django_db

TEMPLATE = """
name: {name}
version: "1.0.0"
custom_events:
  - name: payment_authorized
    schema:
      type: object
      required: [order_id]
      properties:
        order_id: {{type: integer}}
events:
  custom_events:
    - name: payment_amount_exceeds_limit
      payload_schema:
        amount: "number"
        limit: "number"
step_templates:
  - name: s
    handler_class: test.publisher
    handler_config: {config}
"""


def run(load_template: Any, name: str, **config: Any) -> Any:
    load_template(TEMPLATE.format(name=name, config=json.dumps(config)))
    return run_task_to_completion(create_task(name))


def test_declared_event_is_stored_and_signalled(
    load_template: Any, django_capture_on_commit_callbacks: Any
) -> None:
    got: list[dict[str, Any]] = []

    def receiver(sender: Any, event: dict[str, Any], **kw: Any) -> None:
        got.append(event)

    custom_event.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            task = run(load_template, "ok", event="payment_authorized", payload={"order_id": 7})
    finally:
        custom_event.disconnect(receiver)
    assert task.status == TaskStatus.COMPLETE
    stored = TaskEvent.objects.get(task=task, name="custom.payment_authorized")
    assert stored.kind == "event" and stored.payload["data"] == {"order_id": 7}
    assert [(e["event"], e["data"]) for e in got] == [("payment_authorized", {"order_id": 7})]


def test_short_payload_schema_form_is_checked(load_template: Any) -> None:
    task = run(
        load_template,
        "short",
        event="payment_amount_exceeds_limit",
        payload={"amount": "lots", "limit": 10},
    )
    step = WorkflowStep.objects.get(task=task)
    assert step.status == StepStatus.ERROR and step.attempts == 1
    assert step.last_error["error_code"] == "INVALID_EVENT_PAYLOAD"
    assert "'lots' is not of type 'number'" in step.last_error["message"]


def test_undeclared_event_is_refused(load_template: Any) -> None:
    task = run(load_template, "undeclared", event="made_up")
    step = WorkflowStep.objects.get(task=task)
    assert step.last_error["error_code"] == "UNDECLARED_EVENT"
    assert "payment_authorized" in step.last_error["message"]
    assert not TaskEvent.objects.filter(task=task, kind="event").exists()


def test_publish_event_outside_tasker_is_a_clear_error() -> None:
    class Lone(StepHandler, register=False):
        def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
            return {}

    with pytest.raises(RuntimeError, match="only available"):
        Lone().publish_event("x", {})
