"""API: creating, listing, reading and operating on tasks."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from tasker_django import create_task
from tasker_django.models import StepStatus, Task, TaskEvent, TaskStatus
from tests.api_support import assert_error, failed_task, finished_task, step, url

pytest_plugins = ["tests.api_fixtures"]

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_fast_hasher")]

GOOD = {"namespace": "api", "name": "api_payment", "context": {"amount": 12.5}}


def post(client: Any, path: str, data: Any = None, **extra: Any) -> Any:
    return client.post(url(path), data, format="json", **extra)


# -- create --------------------------------------------------------------------------------


def test_create_starts_the_workflow(api_templates: Any, api_operator: Any) -> None:
    body = {
        **GOOD,
        "version": "1.0.0",
        "tags": ["web", "vip"],
        "source_system": "shop",
        "reason": "order 7",
        "priority": 5,
    }
    response = post(api_operator, "tasks/", body)
    assert response.status_code == 201, response.content
    data = response.json()
    assert response["Location"] == url(f"tasks/{data['id']}/")
    assert (data["namespace"], data["name"], data["version"]) == ("api", "api_payment", "1.0.0")
    assert data["status"] == TaskStatus.PENDING
    assert data["context"] == {"amount": 12.5}
    assert data["tags"] == ["web", "vip"]
    assert data["initiator"] == "operator"  # defaults to the user
    assert (data["source_system"], data["reason"], data["priority"]) == ("shop", "order 7", 5)
    assert [s["name"] for s in data["steps"]] == ["pay", "notify", "audit"]
    assert data["steps"][0]["status"] == StepStatus.ENQUEUED
    assert data["step_counts"] == {"enqueued": 1, "pending": 2}
    assert data["steps"][1]["waiting_reason"] == "waiting for pay"
    task = Task.objects.get(pk=data["id"])
    assert task.named_task.version == "1.0.0"
    assert TaskEvent.objects.get(task=task, name="task.created").actor == "operator"


def test_create_uses_the_latest_version_and_explicit_initiator(
    api_templates: Any, api_admin: Any
) -> None:
    response = post(api_admin, "tasks/", {**GOOD, "initiator": "order-service"})
    assert response.status_code == 201
    assert response.json()["version"] == "1.2.0"
    assert response.json()["initiator"] == "order-service"


def test_idempotency_key_returns_the_existing_task(api_templates: Any, api_admin: Any) -> None:
    body = {**GOOD, "idempotency_key": "order-1"}
    first = post(api_admin, "tasks/", body)
    again = post(api_admin, "tasks/", {**body, "context": {"amount": 99}})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["context"] == {"amount": 12.5}
    other = post(api_admin, "tasks/", {**body, "idempotency_key": "order-2"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert Task.objects.count() == 2


def test_context_schema_violations_have_json_paths(api_templates: Any, api_admin: Any) -> None:
    response = post(
        api_admin,
        "tasks/",
        {**GOOD, "context": {"amount": -1, "customer": {"id": "x"}}},
    )
    body = assert_error(response, 400, "invalid")
    assert "does not match the schema" in body["detail"]
    paths = sorted(e["path"] for e in body["errors"])
    assert paths == ["$.context.amount", "$.context.customer.id"]
    missing = assert_error(post(api_admin, "tasks/", {**GOOD, "context": {}}), 400)
    assert missing["errors"][0]["path"] == "$.context"
    assert "'amount' is a required property" in missing["errors"][0]["message"]
    assert Task.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"namespace": "api"}, "$.name"),
        ({**GOOD, "name": ""}, "$.name"),
        ({**GOOD, "context": [1, 2]}, "$.context"),
        ({**GOOD, "context": "text"}, "$.context"),
        ({**GOOD, "tags": "web"}, "$.tags"),
        ({**GOOD, "priority": 2**40}, "$.priority"),
        ({**GOOD, "priority": "high"}, "$.priority"),
        ({**GOOD, "idempotency_key": ""}, "$.idempotency_key"),
        ({**GOOD, "initiator": "x" * 256}, "$.initiator"),
        ({**GOOD, "name": "../../etc"}, "$.name"),
        ({**GOOD, "version": ".."}, "$.version"),
        ({**GOOD, "reason": "nul\x00byte"}, "$.reason"),
        ({**GOOD, "context": {"amount": 1, "note": "nul\x00byte"}}, "$.context.note"),
        ({**GOOD, "context": {"amount": 1, "bad\x00key": 1}}, "$.context"),
        ({**GOOD, "tags": [["deep"]] * 2 + ["a\x00"]}, "$.tags[2]"),
    ],
)
def test_invalid_bodies_are_400_with_paths(
    api_templates: Any, api_admin: Any, body: dict[str, Any], path: str
) -> None:
    errors = assert_error(post(api_admin, "tasks/", body), 400)["errors"]
    assert path in [e["path"] for e in errors], errors
    assert Task.objects.count() == 0


def test_deep_json_is_refused_before_it_reaches_a_service(
    api_templates: Any, api_admin: Any
) -> None:
    deep: Any = 1
    for _ in range(200):
        deep = {"d": deep}
    body = assert_error(post(api_admin, "tasks/", {**GOOD, "context": deep}), 400)
    assert "nested deeper than 64 levels" in body["detail"]
    very_deep = "[" * 100_000 + "]" * 100_000
    response = api_admin.post(url("tasks/"), very_deep, content_type="application/json")
    assert_error(response, 400, "parse_error")


def test_bad_json_and_media_type(api_templates: Any, api_admin: Any) -> None:
    response = api_admin.post(url("tasks/"), "{not json", content_type="application/json")
    body = assert_error(response, 400, "parse_error")
    assert body["detail"].startswith("JSON parse error")
    nan = api_admin.post(
        url("tasks/"),
        '{"name": "api_payment", "context": {"amount": NaN}}',
        content_type="application/json",
    )
    assert_error(nan, 400, "parse_error")
    form = api_admin.post(url("tasks/"), "name=x", content_type="text/plain")
    assert_error(form, 415, "unsupported_media_type")


def test_unknown_template_is_400_without_server_details(api_templates: Any, api_admin: Any) -> None:
    body = assert_error(post(api_admin, "tasks/", {**GOOD, "name": "nope"}), 400)
    assert body["code"] == "template_not_found"
    assert body["detail"] == "No task template api/nope is loaded."
    assert body["errors"] == [{"path": "$.name", "message": body["detail"]}]
    versioned = assert_error(post(api_admin, "tasks/", {**GOOD, "version": "9.9.9"}), 400)
    assert versioned["detail"] == "No task template api/api_payment@9.9.9 is loaded."


@override_settings(TASKER={"API_MAX_CONTEXT_BYTES": 200, "API_MAX_RESULTS_BYTES": 100})
def test_size_limits_are_413(api_templates: Any, api_admin: Any) -> None:
    big = {**GOOD, "context": {"amount": 1, "note": "x" * 300}}
    body = assert_error(post(api_admin, "tasks/", big), 413, "too_large")
    assert "$.context is" in body["detail"] and "API_MAX_CONTEXT_BYTES" in body["detail"]
    assert body["errors"][0]["path"] == "$.context"
    huge = json.dumps({**GOOD, "reason": "y" * 70_000})  # over the limit plus 64 KiB
    body = assert_error(api_admin.post(url("tasks/"), huge, content_type="application/json"), 413)
    assert "larger than 65736 bytes" in body["detail"]
    assert Task.objects.count() == 0


# -- list ----------------------------------------------------------------------------------


def make_tasks() -> list[Task]:
    now = timezone.now()
    tasks = [
        create_task("api_payment", namespace="api", version="1.0.0", context={"amount": 1}),
        create_task(
            "api_payment",
            namespace="api",
            context={"amount": 2},
            tags=["vip", "web"],
            initiator="shop",
        ),
        create_task("api_failing", namespace="api", tags={"region": "eu"}, source_system="crm"),
        create_task("api_secret", namespace="secret", idempotency_key="k-1"),
    ]
    for i, task in enumerate(tasks):  # distinct creation times, oldest first
        Task.objects.filter(pk=task.pk).update(created_at=now - timedelta(hours=10 - i))
    failed_task()  # a fifth task, in error, created now
    return tasks


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_list_filters(api_templates: Any, api_admin: Any) -> None:
    a, b, c, d = make_tasks()
    failed = Task.objects.get(status=TaskStatus.ERROR)

    def get(query: str) -> list[int]:
        return ids(api_admin.get(url(f"tasks/?{query}")))

    assert get("") == [failed.pk, d.pk, c.pk, b.pk, a.pk]  # newest first
    assert get("status=error") == [failed.pk]
    assert set(get("status=error&status=pending")) == {failed.pk, a.pk, b.pk, c.pk, d.pk}
    assert get("namespace=secret") == [d.pk]
    assert get("name=api_payment") == [b.pk, a.pk]
    assert get("name=api_payment&version=1.0.0") == [a.pk]
    assert get("tag=vip") == [b.pk]
    assert get("tag=region") == [c.pk]  # a key of an object of tags
    assert get("tag=nothing") == []
    assert get("initiator=shop") == [b.pk]
    assert get("source_system=crm") == [c.pk]
    assert get("idempotency_key=k-1") == [d.pk]
    after = (timezone.now() - timedelta(hours=8, minutes=30)).isoformat()
    before = (timezone.now() - timedelta(hours=6, minutes=30)).isoformat()
    assert get(f"created_after={after}&created_before={before}".replace("+", "%2B")) == [
        d.pk,
        c.pk,
    ]
    # Offsets PostgreSQL would refuse are converted to UTC first.
    assert len(get("created_after=0482-09-23T15:55:48-18:11")) == 5


def test_list_ordering_and_pagination(api_templates: Any, api_admin: Any) -> None:
    a, b, c, d = make_tasks()
    failed = Task.objects.get(status=TaskStatus.ERROR)
    assert ids(api_admin.get(url("tasks/?ordering=id"))) == [a.pk, b.pk, c.pk, d.pk, failed.pk]
    assert ids(api_admin.get(url("tasks/?ordering=-status,id")))[0] == a.pk
    page1 = api_admin.get(url("tasks/?ordering=id&page_size=2")).json()
    assert page1["count"] == 5 and [r["id"] for r in page1["results"]] == [a.pk, b.pk]
    assert "page=2" in page1["next"] and page1["previous"] is None
    page3 = api_admin.get(url("tasks/?ordering=id&page_size=2&page=3")).json()
    assert [r["id"] for r in page3["results"]] == [failed.pk]
    assert_error(api_admin.get(url("tasks/?page=9")), 404, "not_found")
    with override_settings(TASKER={"API_PAGE_SIZE": 3, "API_MAX_PAGE_SIZE": 4}):
        assert len(ids(api_admin.get(url("tasks/")))) == 3
        assert len(ids(api_admin.get(url("tasks/?page_size=100")))) == 4


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("status=bogus", "?status"),
        ("created_after=yesterday", "?created_after"),
        ("created_before=2024-13-45", "?created_before"),
        ("created_after=0001-01-01T00:00:00%2B05:00", "?created_after"),  # before year 1 in UTC
    ],
)
def test_bad_filters_are_400(api_templates: Any, api_admin: Any, query: str, path: str) -> None:
    body = assert_error(api_admin.get(url(f"tasks/?{query}")), 400, "invalid")
    assert body["errors"][0]["path"] == path
    assert body["detail"].startswith(f"Invalid query parameter {path}")


# -- detail --------------------------------------------------------------------------------


def test_detail_of_a_finished_task(api_templates: Any, api_admin: Any) -> None:
    task = finished_task(context={"amount": 3})
    data = api_admin.get(url(f"tasks/{task.pk}/")).json()
    assert data["status"] == TaskStatus.COMPLETE
    assert (data["total_steps"], data["completed_steps"], data["progress"]) == (3, 3, 1.0)
    assert data["step_counts"] == {"complete": 3}
    pay = data["steps"][0]
    assert pay["results"]["value"] is None and pay["attempts"] == 1
    assert pay["waiting_reason"] == "" and pay["completed_at"] is not None
    assert data["steps"][1]["results"]["parents"] == {"pay": pay["results"]}


def test_detail_of_a_failed_task_shows_error_and_reasons(
    api_templates: Any, api_admin: Any
) -> None:
    task = failed_task()
    data = api_admin.get(url(f"tasks/{task.pk}/")).json()
    charge, receipt = data["steps"]
    assert charge["status"] == "error" and charge["last_error"]["message"] == "card declined"
    assert charge["waiting_reason"] == "failed after 1 of 3 attempts: card declined"
    assert receipt["waiting_reason"] == "blocked: parent failed: charge"
    assert data["failed_steps"] == 1


@override_settings(TASKER={"API_TASK_DETAIL_MAX_STEPS": 2})
def test_detail_truncates_large_tasks(api_templates: Any, api_admin: Any) -> None:
    task = create_task("api_payment", namespace="api", context={"amount": 1})
    data = api_admin.get(url(f"tasks/{task.pk}/")).json()
    assert data["steps_truncated"] is True and len(data["steps"]) == 2
    assert sum(data["step_counts"].values()) == 3


def test_detail_404(api_templates: Any, api_admin: Any) -> None:
    assert_error(api_admin.get(url("tasks/999999/")), 404, "not_found")
    assert api_admin.get(url("tasks/abc/")).status_code == 404
    assert_error(api_admin.get(url("tasks/99999999999999999999999/")), 404)


# -- operator actions on tasks -------------------------------------------------------------


def test_cancel(api_templates: Any, api_operator: Any) -> None:
    task = create_task("api_payment", namespace="api", context={"amount": 1})
    response = post(api_operator, f"tasks/{task.pk}/cancel/", {"reason": "customer left"})
    assert response.status_code == 200, response.content
    assert response.json()["status"] == TaskStatus.CANCELLED
    event = TaskEvent.objects.get(task=task, name="task.cancelled")
    assert (event.actor, event.reason) == ("operator", "customer left")
    again = assert_error(post(api_operator, f"tasks/{task.pk}/cancel/"), 409, "conflict")
    assert again["detail"] == f"task {task.pk} is already cancelled"
    assert_error(post(api_operator, "tasks/999999/cancel/"), 404)
    assert_error(post(api_operator, f"tasks/{task.pk}/cancel/", {"reason": []}), 400)


def test_retry_failed(api_templates: Any, api_operator: Any) -> None:
    task = failed_task()
    response = post(api_operator, f"tasks/{task.pk}/retry-failed/", {"reason": "again"})
    assert response.status_code == 200, response.content
    data = response.json()
    assert data["retried_steps"] == [step(task, "charge").pk]
    assert data["task"]["status"] == TaskStatus.IN_PROGRESS
    assert step(task, "charge").status == StepStatus.ENQUEUED
    action = TaskEvent.objects.get(task=task, name="action.retry_step")
    assert (action.actor, action.reason) == ("operator", "again")
    body = assert_error(post(api_operator, f"tasks/{task.pk}/retry-failed/"), 409)
    assert "has no failed steps" in body["detail"]


# -- events and steps of a task ------------------------------------------------------------


def test_events_timeline(api_templates: Any, api_operator: Any) -> None:
    task = failed_task()
    post(api_operator, f"tasks/{task.pk}/retry-failed/", {"reason": "again"})
    events = api_operator.get(url(f"tasks/{task.pk}/events/")).json()
    names = [e["name"] for e in events["results"]]
    assert names[0] == "task.created" and "action.retry_step" in names
    assert events["count"] == TaskEvent.objects.filter(task=task).count()
    charge = step(task, "charge")
    only = api_operator.get(url(f"tasks/{task.pk}/events/?kind=action")).json()["results"]
    assert [(e["name"], e["step"], e["step_name"], e["actor"]) for e in only] == [
        ("action.retry_step", charge.pk, "charge", "operator")
    ]
    by_step = api_operator.get(url(f"tasks/{task.pk}/events/?step={charge.pk}")).json()
    assert {e["step"] for e in by_step["results"]} == {charge.pk}
    by_name = api_operator.get(url(f"tasks/{task.pk}/events/?name=task.created")).json()
    assert by_name["count"] == 1
    newest = api_operator.get(url(f"tasks/{task.pk}/events/?ordering=-created_at,-id"))
    assert newest.json()["results"][0]["name"] != "task.created"
    assert_error(api_operator.get(url("tasks/999999/events/")), 404)
    assert_error(api_operator.get(url(f"tasks/{task.pk}/events/?kind=nope")), 400)


def test_steps_of_a_task(api_templates: Any, api_admin: Any) -> None:
    task = finished_task()
    other = finished_task()
    rows = api_admin.get(url(f"tasks/{task.pk}/steps/")).json()
    assert [r["name"] for r in rows["results"]] == ["pay", "notify", "audit"]
    assert {r["task"] for r in rows["results"]} == {task.pk} != {other.pk}
    named = api_admin.get(url(f"tasks/{task.pk}/steps/?name=audit&status=complete")).json()
    assert [r["name"] for r in named["results"]] == ["audit"]
    paged = api_admin.get(url(f"tasks/{task.pk}/steps/?page_size=1&page=2")).json()
    assert paged["count"] == 3 and [r["name"] for r in paged["results"]] == ["notify"]
    assert_error(api_admin.get(url("tasks/999999/steps/")), 404)
