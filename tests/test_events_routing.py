"""Template events: publication toggles, settings.event_publishing, routing to sinks, W006/W007."""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from tasker_django import create_task
from tasker_django.checks import check_event_routing, check_event_sinks
from tasker_django.engine.policy import policy_for
from tasker_django.engine.publication import DEFAULT_EVENT_POLICY, builtin_event, route_target
from tasker_django.models import StepStatus, TaskEvent, TaskStatus, WorkflowStep
from tasker_django.services import operations
from tasker_django.signals import (
    custom_event,
    step_completed,
    step_started,
    task_completed,
    task_started,
)
from tasker_django.testing import run_task_to_completion

from .conftest import SEED_DIR

pytestmark = pytest.mark.django_db

#: What the recording sinks received, in order (cleared by the ``received`` fixture).
RECEIVED: list[tuple[str, dict[str, Any]]] = []

CARD = "4111111111111111"


def record(event: dict[str, Any]) -> None:
    RECEIVED.append(("rec", event))


class RecordingSink:
    """A class sink: instantiated once, ``send`` called per event."""

    def send(self, event: dict[str, Any]) -> None:
        RECEIVED.append(("cls", event))


def explode(event: dict[str, Any]) -> None:
    raise RuntimeError("sink is down")


SINKS = {
    "rec": "tests.test_events_routing.record",
    "cls": "tests.test_events_routing.RecordingSink",
    "boom": "tests.test_events_routing.explode",
}


@pytest.fixture
def received() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    RECEIVED.clear()
    with override_settings(TASKER={**settings.TASKER, "EVENT_SINKS": SINKS}):
        yield RECEIVED
    RECEIVED.clear()


@pytest.fixture
def signals_seen() -> Iterator[list[str]]:
    seen: list[str] = []
    receivers = []
    for name, sig in [
        ("task.started", task_started),
        ("task.completed", task_completed),
        ("step.started", step_started),
        ("step.completed", step_completed),
        ("custom", custom_event),
    ]:

        def receiver(sender: Any, event: dict[str, Any], _name: str = name, **kw: Any) -> None:
            seen.append(_name)

        sig.connect(receiver, weak=False)
        receivers.append((sig, receiver))
    yield seen
    for sig, receiver in receivers:
        sig.disconnect(receiver)


def run(name: str, capture: Any, namespace: str = "default") -> Any:
    with capture(execute=True):
        task = run_task_to_completion(create_task(name, namespace=namespace))
    return task


ROUTED = """
name: {name}
version: "1.0.0"
namespace: shop
settings: {{event_publishing: {publishing}}}
events:
  publish_step_started: {step_started}
  publish_task_completed: {task_completed}
  step_events:
    - {{event: step_started, publish_to: [rec]}}
    - {{event: step_completed, publish_to: [rec, cls]}}
  workflow_events:
    - {{event: workflow_started, publish_to: [rec]}}
    - {{event: workflow_completed, publish_to: [rec]}}
    - {{event: payment_processed, publish_to: [rec]}}
step_templates:
  - name: charge
    handler_class: test.publisher
    handler_config:
      event: payment_processed
      payload: {{amount: 12.5, card_number: "{card}", note: "card {card} used"}}
  - {{name: notify, handler_class: test.noop, depends_on_step: charge}}
"""


def routed(
    load_template: Any,
    name: str,
    *,
    publishing: bool = True,
    step_started: bool = True,
    task_completed: bool = True,
) -> Any:
    return load_template(
        ROUTED.format(
            name=name,
            publishing=json.dumps(publishing),
            step_started=json.dumps(step_started),
            task_completed=json.dumps(task_completed),
            card=CARD,
        )
    )


def names(received: list[tuple[str, dict[str, Any]]], sink: str = "rec") -> list[str]:
    return [e["name"] for s, e in received if s == sink]


def test_route_names_map_to_stored_event_names() -> None:
    assert builtin_event("step_started") == "step.started"
    assert builtin_event("workflow_failed") == "task.failed"
    assert builtin_event("task_completed") == "task.completed"
    assert builtin_event("step.retried") == "step.retried"
    assert builtin_event("payment_processed") is None
    assert route_target("notification_sent") == "custom.notification_sent"
    assert route_target("step_exploded") == "custom.step_exploded"


def test_routed_events_reach_sinks_with_masked_payloads(
    load_template: Any,
    received: list[tuple[str, dict[str, Any]]],
    signals_seen: list[str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    routed(load_template, "routed")
    task = run("routed", django_capture_on_commit_callbacks, "shop")
    assert task.status == TaskStatus.COMPLETE
    # The routed custom name counts as declared: the handler could publish it.
    assert TaskEvent.objects.filter(task=task, name="custom.payment_processed").exists()
    # (step.started is sent before the handler runs, the others when their transaction
    # commits: the test's transaction holds those back, so compare without order)
    assert sorted(names(received)) == sorted(
        [
            "task.started",
            "step.started",
            "custom.payment_processed",
            "step.completed",
            "step.started",
            "step.completed",
            "task.completed",
        ]
    )
    assert names(received, "cls") == ["step.completed", "step.completed"]
    custom = next(e for s, e in received if e["name"] == "custom.payment_processed")
    assert custom["route"] == "payment_processed"
    assert (custom["namespace"], custom["template"], custom["version"]) == (
        "shop",
        "routed",
        "1.0.0",
    )
    assert custom["task_id"] == task.pk and custom["step_name"] == "charge"
    assert custom["occurred_at"] and custom["audit_logged"] is False
    data = custom["payload"]["data"]
    assert data["card_number"] == "********" and data["amount"] == 12.5
    assert CARD not in json.dumps(received)  # free text is masked too
    assert data["note"] == "card ************1111 used"
    # The stored event keeps the real value (masking never changes stored data).
    stored = TaskEvent.objects.get(task=task, name="custom.payment_processed")
    assert stored.payload["data"]["card_number"] == CARD
    # Signals are published as before.
    assert signals_seen.count("step.completed") == 2 and "task.completed" in signals_seen


def test_toggles_switch_signals_and_sinks_off_but_keep_the_history(
    load_template: Any,
    received: list[tuple[str, dict[str, Any]]],
    signals_seen: list[str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    routed(load_template, "toggled", step_started=False, task_completed=False)
    task = run("toggled", django_capture_on_commit_callbacks, "shop")
    assert task.status == TaskStatus.COMPLETE
    assert "step.started" not in signals_seen and "task.completed" not in signals_seen
    assert signals_seen.count("step.completed") == 2 and "task.started" in signals_seen
    assert "step.started" not in names(received) and "task.completed" not in names(received)
    assert names(received).count("step.completed") == 2
    stored = list(TaskEvent.objects.filter(task=task).values_list("name", flat=True))
    assert stored.count("step.started") == 2 and stored.count("task.completed") == 1


def test_event_publishing_false_publishes_nothing(
    load_template: Any,
    received: list[tuple[str, dict[str, Any]]],
    signals_seen: list[str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    routed(load_template, "silent", publishing=False)
    task = run("silent", django_capture_on_commit_callbacks, "shop")
    assert task.status == TaskStatus.COMPLETE
    assert signals_seen == []
    assert received == []
    stored = set(TaskEvent.objects.filter(task=task).values_list("name", flat=True))
    assert {"task.started", "step.completed", "task.completed", "custom.payment_processed"} <= (
        stored
    )


def test_failing_sink_is_logged_and_isolated(
    load_template: Any,
    received: list[tuple[str, dict[str, Any]]],
    caplog: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    load_template(
        """
name: fragile
version: "1.0.0"
events:
  step_events:
    - {event: step_completed, publish_to: [boom, rec, not_registered]}
step_templates:
  - {name: a, handler_class: test.noop}
  - {name: b, handler_class: test.noop, depends_on_step: a}
"""
    )
    with caplog.at_level(logging.WARNING, logger="tasker_django.events"):
        task = run("fragile", django_capture_on_commit_callbacks)
    assert task.status == TaskStatus.COMPLETE
    assert names(received) == ["step.completed", "step.completed"]  # after the failing one
    failures = [r for r in caplog.records if "event sink 'boom' failed" in r.getMessage()]
    assert len(failures) == 2 and failures[0].exc_info is not None
    unknown = [r for r in caplog.records if "'not_registered'" in r.getMessage()]
    assert len(unknown) == 2


def test_failed_and_retried_steps_and_operator_retry_are_routed(
    load_template: Any,
    received: list[tuple[str, dict[str, Any]]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    load_template(
        """
name: bumpy
version: "1.0.0"
events:
  step_events:
    - {event: step_failed, publish_to: [rec]}
    - {event: step_retried, publish_to: [rec]}
  workflow_events:
    - {event: workflow_failed, publish_to: [rec]}
step_templates:
  - {name: flaky, handler_class: test.flaky, handler_config: {fail_times: 1}}
  - {name: doomed, handler_class: test.permanent, depends_on_step: flaky}
"""
    )
    task = run("bumpy", django_capture_on_commit_callbacks)
    assert task.status == TaskStatus.ERROR
    assert names(received) == [
        "step.failed",
        "step.retried",
        "step.failed",
        "task.failed",
    ]
    failed = [e for _s, e in received if e["name"] == "step.failed"]
    assert failed[0]["payload"]["will_retry"] is True
    assert failed[1]["payload"]["error"]["error_code"] == "CARD_DECLINED"
    received.clear()
    doomed = WorkflowStep.objects.get(task=task, name="doomed")
    with django_capture_on_commit_callbacks(execute=True):
        operations.retry_step(doomed.pk, actor="alice", reason="card replaced")
    assert names(received) == ["step.retried"]
    assert received[0][1]["payload"]["actor"] == "alice"
    assert received[0][1]["payload"]["manual"] is True


def test_logging_sink_logs_one_masked_line_per_event(
    load_template: Any, caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    load_template(
        f"""
name: logged
version: "1.0.0"
events:
  workflow_events:
    - {{event: card_seen, publish_to: [logging]}}
    - {{event: workflow_completed, publish_to: [logging]}}
step_templates:
  - name: a
    handler_class: test.publisher
    handler_config: {{event: card_seen, payload: {{card_number: "{CARD}"}}}}
"""
    )
    with caplog.at_level(logging.INFO, logger="tasker_django.sinks"):
        task = run("logged", django_capture_on_commit_callbacks)
    lines = [r.getMessage() for r in caplog.records if r.name == "tasker_django.sinks"]
    assert len(lines) == 2
    assert lines[0].startswith(f"custom.card_seen task={task.pk} step=")
    assert '"card_number": "********"' in lines[0] and CARD not in "".join(lines)
    assert lines[1].startswith(f"task.completed task={task.pk} step=-")


def test_templates_that_route_nothing_share_the_default_policy(
    load_template: Any, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    named = load_template(
        """
name: plain
version: "1.0.0"
step_templates:
  - {name: a, handler_class: test.noop}
"""
    )
    assert policy_for(named.pk, named.content_hash).events is DEFAULT_EVENT_POLICY

    def no_sinks(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a template that routes nothing must not look up sinks")

    monkeypatch.setattr("tasker_django.engine.publication.deliver", no_sinks)
    task = run("plain", django_capture_on_commit_callbacks)
    assert task.status == TaskStatus.COMPLETE


def test_undeclared_unrouted_custom_event_is_still_refused(load_template: Any) -> None:
    load_template(
        """
name: strict
version: "1.0.0"
events:
  workflow_events:
    - {event: payment_processed, publish_to: [logging]}
step_templates:
  - {name: a, handler_class: test.publisher, handler_config: {event: other_thing}}
"""
    )
    task = run_task_to_completion(create_task("strict"))
    step = WorkflowStep.objects.get(task=task)
    assert step.status == StepStatus.ERROR
    assert step.last_error["error_code"] == "UNDECLARED_EVENT"
    assert "payment_processed" in step.last_error["message"]


# ---------------------------------------------------------------------------
# System checks
# ---------------------------------------------------------------------------


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


def test_w006_names_template_event_and_sink(load_template: Any) -> None:
    load_template(
        """
name: lost
version: "2.0.0"
namespace: shop
events:
  step_events:
    - {event: step_failed, publish_to: [audit_log, logging, pager]}
step_templates:
  - {name: a, handler_class: test.noop}
"""
    )
    messages = check_event_routing(databases=["default"])
    assert ids(messages) == ["tasker_django.W006"]
    text = messages[0].msg
    assert "shop/lost@2.0.0" in text and "'step_failed'" in text and "'pager'" in text
    with override_settings(TASKER={**settings.TASKER, "EVENT_SINKS": {"pager": SINKS["rec"]}}):
        assert check_event_routing(databases=["default"]) == []
    assert check_event_routing(databases=None) == []


def test_w007_reports_settings_without_effect(load_template: Any) -> None:
    load_template(
        """
name: sloppy
version: "1.0.0"
settings: {event_publishing: "yes"}
events:
  publish_step_strated: false
  publish_step_failed: "no"
  step_events:
    - {event: step_failed}
security:
  audit_logging:
    enabled: true
    retention_period: "a while"
    log_level: loud
step_templates:
  - {name: a, handler_class: test.noop}
"""
    )
    messages = check_event_routing(databases=["default"])
    assert set(ids(messages)) == {"tasker_django.W007"}
    text = "\n".join(m.msg for m in messages)
    for key in (
        "settings.event_publishing",
        "events.publish_step_strated",
        "events.publish_step_failed",
        "events.step_events[0].publish_to",
        "security.audit_logging.retention_period",
        "security.audit_logging.log_level",
    ):
        assert key in text, key
    assert len(messages) == 6


def test_w007_for_event_sinks_that_do_not_load() -> None:
    bad = {"x": "tests.test_events_routing.missing_sink", "ok": SINKS["rec"]}
    with override_settings(TASKER={**settings.TASKER, "EVENT_SINKS": bad}):
        messages = check_event_sinks()
    assert ids(messages) == ["tasker_django.W007"] and "'x'" in messages[0].msg
    with override_settings(TASKER={**settings.TASKER, "EVENT_SINKS": ["x"]}):
        assert ids(check_event_sinks()) == ["tasker_django.W007"]
    assert check_event_sinks() == []


def test_seed_templates_with_the_example_project_sinks_show_no_warning() -> None:
    from django.core.management import call_command

    for path in sorted(SEED_DIR.glob("*.yaml")):
        call_command("tasker_load_templates", str(path), verbosity=0)
    missing = check_event_routing(databases=["default"])
    assert set(ids(missing)) == {"tasker_django.W006"}  # the seed's sinks are not built in
    assert {m.msg.split("sink ")[1].split("'")[1] for m in missing} == {
        "monitoring",
        "analytics",
        "alerting",
        "customer_updates",
        "fraud_detection",
    }
    project = importlib.import_module("example_project.settings")
    sinks = project.TASKER["EVENT_SINKS"]
    with override_settings(TASKER={**settings.TASKER, "EVENT_SINKS": sinks}):
        assert check_event_routing(databases=["default"]) == []
        assert check_event_sinks() == []
