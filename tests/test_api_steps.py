"""API: steps of all tasks, a step's detail and attempt history, and the operator actions."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from tasker_django import create_task
from tasker_django.models import StepAttempt, StepStatus, TaskEvent, TaskStatus
from tasker_django.testing import run_task_to_completion
from tests.api_support import assert_error, failed_task, finished_task, step, url

pytest_plugins = ["tests.api_fixtures"]

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_fast_hasher")]

FLAKY = """
name: api_flaky
namespace: api
version: "1.0.0"
step_templates:
  - name: wobble
    handler_class: test.flaky
    handler_config: {fail_times: 2}
    default_retry_limit: 3
"""


def post(client: Any, path: str, data: Any = None) -> Any:
    return client.post(url(path), data, format="json")


def test_list_steps_of_all_tasks_with_filters(api_templates: Any, api_admin: Any) -> None:
    done = finished_task()
    failed = failed_task()

    def names(query: str) -> list[tuple[int, str]]:
        response = api_admin.get(url(f"steps/?{query}"))
        assert response.status_code == 200, response.content
        return [(r["task"], r["name"]) for r in response.json()["results"]]

    assert len(names("")) == 5
    assert names("status=error") == [(failed.pk, "charge")]
    assert set(names("status=error&status=pending")) == {
        (failed.pk, "charge"),
        (failed.pk, "receipt"),
    }
    assert names(f"task={done.pk}&ordering=position") == [
        (done.pk, "pay"),
        (done.pk, "notify"),
        (done.pk, "audit"),
    ]
    assert names("name=audit") == [(done.pk, "audit")]
    assert len(names("namespace=api")) == 5 and names("namespace=secret") == []
    row = api_admin.get(url("steps/?status=error")).json()["results"][0]
    assert (row["namespace"], row["task_name"], row["last_error"]["message"]) == (
        "api",
        "api_failing",
        "card declined",
    )
    for bad in ("task=abc", "task=1.5", "status=sleeping"):
        assert_error(api_admin.get(url(f"steps/?{bad}")), 400)


def test_detail_with_attempt_history(
    load_template: Any, api_templates: Any, api_admin: Any
) -> None:
    load_template(FLAKY)
    task = run_task_to_completion(create_task("api_flaky", namespace="api"))
    wobble = step(task, "wobble")
    data = api_admin.get(url(f"steps/{wobble.pk}/")).json()
    assert data["status"] == StepStatus.COMPLETE and data["attempts"] == 3
    assert data["handler_class"] == "test.flaky" and data["task_status"] == TaskStatus.COMPLETE
    assert [a["attempt_number"] for a in data["attempt_history"]] == [1, 2, 3]
    assert [a["outcome"] for a in data["attempt_history"]] == [
        "retryable_error",
        "retryable_error",
        "success",
    ]
    first = data["attempt_history"][0]
    assert first["error_message"] == "flaky attempt 1" and first["error_category"] == "test"
    assert data["results"] == {"attempts": 3}
    assert (data["parents"], data["children"], data["waiting_reason"]) == ([], [], "")
    assert StepAttempt.objects.filter(step=wobble).count() == 3


def test_detail_parents_children_and_reason(api_templates: Any, api_admin: Any) -> None:
    task = failed_task()
    receipt = api_admin.get(url(f"steps/{step(task, 'receipt').pk}/")).json()
    assert receipt["parents"] == ["charge"] and receipt["waiting_reason"].startswith("blocked")
    charge = api_admin.get(url(f"steps/{step(task, 'charge').pk}/")).json()
    assert charge["children"] == ["receipt"]
    assert_error(api_admin.get(url("steps/999999/")), 404, "not_found")


def test_retry_a_failed_step(api_templates: Any, api_operator: Any) -> None:
    task = failed_task()
    charge = step(task, "charge")
    response = post(api_operator, f"steps/{charge.pk}/retry/", {"reason": "gateway back"})
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["status"] == StepStatus.ENQUEUED and data["task_status"] == TaskStatus.IN_PROGRESS
    event = TaskEvent.objects.get(task=task, name="action.retry_step")
    assert (event.actor, event.reason, event.payload["reset_downstream"]) == (
        "operator",
        "gateway back",
        False,
    )
    body = assert_error(post(api_operator, f"steps/{charge.pk}/retry/"), 409, "conflict")
    assert "only failed, cancelled or backing-off steps can be retried" in body["detail"]


def test_retry_a_finished_step_with_downstream(api_templates: Any, api_operator: Any) -> None:
    task = finished_task()
    pay = step(task, "pay")
    assert_error(post(api_operator, f"steps/{pay.pk}/retry/"), 409)
    response = post(api_operator, f"steps/{pay.pk}/retry/", {"reset_downstream": True})
    assert response.status_code == 200, response.content
    assert response.json()["status"] == StepStatus.ENQUEUED
    assert step(task, "notify").status == StepStatus.PENDING
    assert step(task, "audit").results is None
    assert run_task_to_completion(task).status == TaskStatus.COMPLETE
    assert_error(post(api_operator, f"steps/{pay.pk}/retry/", {"reset_downstream": "maybe"}), 400)


def test_resolve_with_results_unblocks_children(api_templates: Any, api_operator: Any) -> None:
    task = failed_task()
    charge = step(task, "charge")
    response = post(
        api_operator,
        f"steps/{charge.pk}/resolve/",
        {"results": {"paid_by": "phone"}, "reason": "paid by phone"},
    )
    assert response.status_code == 200, response.content
    assert response.json()["status"] == StepStatus.RESOLVED_MANUALLY
    assert response.json()["results"] == {"paid_by": "phone"}
    task = run_task_to_completion(task)
    assert task.status == TaskStatus.COMPLETE
    assert step(task, "receipt").results["parents"] == {"charge": {"paid_by": "phone"}}
    action = TaskEvent.objects.get(task=task, name="action.resolve_step")
    assert (action.actor, action.reason) == ("operator", "paid by phone")
    body = assert_error(post(api_operator, f"steps/{charge.pk}/resolve/"), 409)
    assert body["detail"] == "step 'charge' is already resolved_manually"


def test_resolve_without_results_and_bad_results(api_templates: Any, api_operator: Any) -> None:
    task = failed_task()
    charge = step(task, "charge")
    assert_error(post(api_operator, f"steps/{charge.pk}/resolve/", {"results": [1]}), 400)
    bad = assert_error(
        post(api_operator, f"steps/{charge.pk}/resolve/", {"results": {"a": "\x00"}}), 400
    )
    assert bad["errors"] == [{"path": "$.results.a", "message": bad["errors"][0]["message"]}]
    response = post(api_operator, f"steps/{charge.pk}/resolve/", {})
    assert response.status_code == 200 and response.json()["results"] is None


def test_complete_needs_results(api_templates: Any, api_operator: Any) -> None:
    task = failed_task()
    charge = step(task, "charge")
    body = assert_error(post(api_operator, f"steps/{charge.pk}/complete/", {}), 400)
    assert body["errors"][0]["path"] == "$.results"
    response = post(api_operator, f"steps/{charge.pk}/complete/", {"results": {"ok": 1}})
    assert response.status_code == 200, response.content
    assert response.json()["status"] == StepStatus.COMPLETE
    assert TaskEvent.objects.get(task=task, name="action.complete_step").actor == "operator"


@override_settings(TASKER={"API_MAX_RESULTS_BYTES": 50})
def test_results_over_the_limit_are_413(api_templates: Any, api_operator: Any) -> None:
    charge = step(failed_task(), "charge")
    for action in ("complete", "resolve"):
        body = assert_error(
            post(api_operator, f"steps/{charge.pk}/{action}/", {"results": {"x": "y" * 60}}),
            413,
            "too_large",
        )
        assert body["errors"][0]["path"] == "$.results"
        assert "API_MAX_RESULTS_BYTES" in body["detail"]
    assert step(charge.task, "charge").status == StepStatus.ERROR


def test_cancel_a_step(api_templates: Any, api_operator: Any) -> None:
    task = create_task("api_payment", namespace="api", context={"amount": 1})
    audit = step(task, "audit")
    response = post(api_operator, f"steps/{audit.pk}/cancel/", {"reason": "not needed"})
    assert response.status_code == 200, response.content
    assert response.json()["status"] == StepStatus.CANCELLED
    assert_error(post(api_operator, f"steps/{audit.pk}/cancel/"), 409)
    assert_error(post(api_operator, "steps/999999/cancel/"), 404)
