"""Health probes, the status summary and the Prometheus metrics."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tasker_django import create_task
from tasker_django.api import health
from tasker_django.engine import dispatch
from tasker_django.models import StepAttempt, StepStatus, Task, TaskStatus, WorkflowStep
from tests.api_support import failed_task, finished_task, step, url

pytest_plugins = ["tests.api_fixtures"]

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_fast_hasher")]


def test_live(api_anon: Any) -> None:
    assert api_anon.get(url("health/live/")).json() == {"status": "ok"}


def test_ready(api_anon: Any) -> None:
    response = api_anon.get(url("health/ready/"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_ready_is_503_when_the_database_is_down(api_anon: Any, monkeypatch: Any) -> None:
    def broken_cursor(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("connection refused to db.internal:5432 as user secret")

    monkeypatch.setattr(health.connections["default"], "cursor", broken_cursor)
    monkeypatch.setattr(dispatch, "ping", lambda: True)
    response = api_anon.get(url("health/ready/"))
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "down", "broker": "ok"},
    }
    assert b"db.internal" not in response.content  # the reason goes to the log only


def test_ready_is_503_when_the_broker_is_down(api_anon: Any, monkeypatch: Any) -> None:
    broker = dispatch.get_broker()

    class Unreachable:
        def ping(self) -> bool:
            raise ConnectionError("redis://secret@10.0.0.1 unreachable")

    monkeypatch.setattr(dispatch, "_orm_alias", lambda b: None)
    monkeypatch.setattr(dispatch, "get_broker", lambda: Unreachable())
    response = api_anon.get(url("health/ready/"))
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "broker": "down"}
    assert b"secret" not in response.content
    monkeypatch.undo()
    assert dispatch.get_broker() is broker and dispatch.ping() is True


def make_stuck(task: Task, minutes: int = 10) -> None:
    long_ago = timezone.now() - timedelta(minutes=minutes)
    pay, notify, audit = (step(task, n) for n in ("pay", "notify", "audit"))
    WorkflowStep.objects.filter(pk=pay.pk).update(enqueued_at=long_ago)
    WorkflowStep.objects.filter(pk=notify.pk).update(
        status=StepStatus.IN_PROGRESS, lease_expires_at=long_ago, attempts=1
    )
    WorkflowStep.objects.filter(pk=audit.pk).update(
        status=StepStatus.WAITING_FOR_RETRY, next_attempt_at=long_ago, attempts=1
    )


def test_status_counts_and_stuck_steps(api_templates: Any, api_admin: Any) -> None:
    finished_task()
    failed_task()
    calm = api_admin.get(url("health/status/")).json()
    assert calm["status"] == "ok"
    assert calm["tasks"]["complete"] == 1 and calm["tasks"]["error"] == 1
    assert calm["steps"]["complete"] == 3 and calm["steps"]["error"] == 1
    assert calm["stuck"] == {"enqueued_too_long": 0, "lease_expired": 0, "retry_overdue": 0}
    assert calm["oldest_enqueued_age_seconds"] is None and calm["overdue_tasks"] == 0
    task = create_task("api_payment", namespace="api", context={"amount": 1})
    make_stuck(task)
    Task.objects.filter(pk=task.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))
    data = api_admin.get(url("health/status/")).json()
    assert data["status"] == "degraded"
    assert data["stuck"] == {"enqueued_too_long": 1, "lease_expired": 1, "retry_overdue": 1}
    assert {(s["name"], s["problem"]) for s in data["stuck_steps"]} == {
        ("pay", "enqueued_too_long"),
        ("notify", "lease_expired"),
        ("audit", "retry_overdue"),
    }
    assert data["overdue_tasks"] == 1
    assert 590 < data["oldest_enqueued_age_seconds"] < 700
    assert isinstance(data["queue_size"], int)
    with override_settings(TASKER={"API_STUCK_AFTER_SECONDS": 3600}):
        assert api_admin.get(url("health/status/")).json()["stuck"]["lease_expired"] == 0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics(api_templates: Any, api_admin: Any) -> None:
    finished_task()
    failed = failed_task()
    StepAttempt.objects.filter(task=failed).update(duration_ms=2000)  # 2 s
    task = create_task("api_payment", namespace="api", context={"amount": 1})
    make_stuck(task, minutes=20)
    response = api_admin.get(url("metrics/"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    values = samples(response.content.decode())

    def value(metric: str, /, **labels: str) -> float:
        return values[(metric, tuple(sorted(labels.items())))]

    assert value("tasker_tasks", namespace="api", name="api_payment", status="complete") == 1
    assert value("tasker_tasks", namespace="api", name="api_failing", status="error") == 1
    assert value("tasker_tasks", namespace="api", name="api_payment", status="pending") == 1
    assert value("tasker_steps", status="complete") == 3
    assert value("tasker_steps", status="cancelled") == 0
    assert value("tasker_step_attempts_total", outcome="success") == 3
    assert value("tasker_step_attempts_total", outcome="permanent_error") == 1
    assert value("tasker_step_retries_total") == 0
    failed_bucket = {"outcome": "permanent_error"}
    assert value("tasker_step_attempt_duration_seconds_bucket", le="1.0", **failed_bucket) == 0
    assert value("tasker_step_attempt_duration_seconds_bucket", le="2.5", **failed_bucket) == 1
    assert value("tasker_step_attempt_duration_seconds_bucket", le="+Inf", **failed_bucket) == 1
    assert value("tasker_step_attempt_duration_seconds_sum", **failed_bucket) == 2.0
    assert value("tasker_step_attempt_duration_seconds_count", outcome="success") == 3
    assert value("tasker_task_duration_seconds_count", status="complete") == 1
    assert value("tasker_task_duration_seconds_bucket", status="error", le="+Inf") == 1
    assert 1150 < value("tasker_oldest_enqueued_step_age_seconds") < 1300
    assert value("tasker_stuck_steps", problem="lease_expired") == 1
    assert value("tasker_overdue_tasks") == 0
    assert ("tasker_broker_queue_size", ()) in values


def test_metrics_count_retries_and_bucket_task_durations(
    api_templates: Any, api_admin: Any
) -> None:
    task = finished_task()
    Task.objects.filter(pk=task.pk).update(
        started_at=task.completed_at - timedelta(seconds=7), completed_at=task.completed_at
    )
    StepAttempt.objects.filter(task=task, step__name="audit").update(attempt_number=2)
    values = samples(api_admin.get(url("metrics/")).content.decode())
    complete = (("status", "complete"),)
    assert values[("tasker_task_duration_seconds_bucket", (("le", "5.0"), *complete))] == 0
    assert values[("tasker_task_duration_seconds_bucket", (("le", "10.0"), *complete))] == 1
    assert 6.9 < values[("tasker_task_duration_seconds_sum", complete)] < 7.1
    assert values[("tasker_step_retries_total", ())] == 1
    assert Task.objects.get(pk=task.pk).status == TaskStatus.COMPLETE


def test_openmetrics_on_request(api_templates: Any, api_admin: Any) -> None:
    response = api_admin.get(
        url("metrics/"), HTTP_ACCEPT="application/openmetrics-text; version=1.0.0"
    )
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")
