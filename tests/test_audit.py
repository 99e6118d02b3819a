"""security.audit_logging: append-only audit records of every change, masking, retention,
the prune command, the audit_log sink, and the audit log in the admin and the API."""

from __future__ import annotations

import io
import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.db import connection, transaction
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from tasker_django import create_task
from tasker_django.models import AuditRecord, StepStatus, TaskEvent, TaskStatus, WorkflowStep
from tasker_django.security.audit import parse_retention
from tasker_django.services import operations
from tasker_django.testing import FakeClock, run_task_to_completion

pytestmark = pytest.mark.django_db

CARD = "4111111111111111"

AUDITED = """
name: {name}
version: "1.0.0"
namespace: pay
security:
  sensitive_fields: [customer_secret]
  audit_logging:
    enabled: {enabled}
    log_level: {log_level}
    include_sensitive_data: {include}
    retention_period: {retention}
step_templates:
  - name: charge
    handler_class: test.publisher
    handler_config:
      event: charged
      payload: {{card_number: "{card}", customer_secret: "s3cr3t", amount: 5}}
  - {{name: {second}, depends_on_step: charge}}
custom_events:
  - name: charged
"""


def audited(
    load_template: Any,
    name: str,
    *,
    enabled: bool = True,
    include: bool = False,
    retention: str = '"90d"',
    log_level: str = "info",
    second: str = "notify, handler_class: test.noop",
) -> Any:
    return load_template(
        AUDITED.format(
            name=name,
            enabled=json.dumps(enabled),
            include=json.dumps(include),
            retention=retention,
            log_level=log_level,
            card=CARD,
            second=second,
        )
    )


def event_keys(task: Any) -> list[tuple[str, int | None]]:
    rows = TaskEvent.objects.filter(task=task).values_list("name", "step_id")
    return sorted((name, step) for name, step in rows)


def audit_keys(task: Any) -> list[tuple[str, int | None]]:
    rows = AuditRecord.objects.filter(task_id=task.pk).values_list("event", "step_id")
    return sorted((name, step) for name, step in rows)


def test_parse_retention() -> None:
    assert parse_retention("7_years") == timedelta(days=7 * 365)
    assert parse_retention("90d") == timedelta(days=90)
    assert parse_retention("30 days") == timedelta(days=30)
    assert parse_retention("12h") == timedelta(hours=12)
    assert parse_retention("6_months") == timedelta(days=180)
    assert parse_retention(3600) == timedelta(hours=1)
    assert parse_retention("3600") == timedelta(hours=1)
    assert parse_retention(None) is None and parse_retention("forever") is None
    for bad in ("soon", "7 eons", 0, -5, True, "0d"):
        with pytest.raises(ValueError):
            parse_retention(bad)


def test_every_event_of_an_audited_run_has_a_masked_record(load_template: Any) -> None:
    audited(load_template, "full")
    clock = FakeClock()
    task = run_task_to_completion(create_task("full", namespace="pay"), clock=clock)
    assert task.status == TaskStatus.COMPLETE
    keys = audit_keys(task)
    assert keys == event_keys(task)
    assert {"task.created", "task.started", "task.completed", "custom.charged"} <= {
        name for name, _ in keys
    }
    assert sum(1 for name, _ in keys if name == "step.completed") == 2
    custom = AuditRecord.objects.get(task_id=task.pk, event="custom.charged")
    assert custom.payload["data"] == {
        "card_number": "********",
        "customer_secret": "********",  # declared by the template
        "amount": 5,
    }
    assert (custom.namespace, custom.template, custom.version) == ("pay", "full", "1.0.0")
    assert custom.step_name == "charge" and custom.kind == "event"
    assert custom.expires_at == custom.created_at + timedelta(days=90)
    # The history itself is not masked.
    stored = TaskEvent.objects.get(task=task, name="custom.charged")
    assert stored.payload["data"]["card_number"] == CARD


def test_include_sensitive_data_stores_plain_payloads(load_template: Any) -> None:
    audited(load_template, "plain", include=True, retention="null")
    task = run_task_to_completion(create_task("plain", namespace="pay"))
    custom = AuditRecord.objects.get(task_id=task.pk, event="custom.charged")
    assert custom.payload["data"]["card_number"] == CARD
    assert custom.expires_at is None  # no retention period: kept forever


def test_templates_without_audit_logging_write_nothing(load_template: Any) -> None:
    audited(load_template, "disabled", enabled=False)
    task = run_task_to_completion(create_task("disabled", namespace="pay"))
    assert task.status == TaskStatus.COMPLETE
    assert not AuditRecord.objects.exists()


def test_operator_actions_are_audited_with_actor_and_reason(load_template: Any) -> None:
    audited(load_template, "ops", second="doomed, handler_class: test.permanent")
    task = run_task_to_completion(create_task("ops", namespace="pay"))
    assert task.status == TaskStatus.ERROR
    doomed = WorkflowStep.objects.get(task=task, name="doomed")
    operations.retry_step(doomed.pk, actor="alice", reason="customer updated the card")
    operations.cancel_task(task.pk, actor="bob", reason=f"fraud suspected on {CARD}")
    retry = AuditRecord.objects.get(task_id=task.pk, event="action.retry_step")
    assert (retry.kind, retry.actor, retry.reason) == (
        "action",
        "alice",
        "customer updated the card",
    )
    assert (retry.from_status, retry.to_status) == (StepStatus.ERROR, StepStatus.ENQUEUED)
    assert retry.step_id == doomed.pk and retry.step_name == "doomed"
    cancel = AuditRecord.objects.get(task_id=task.pk, event="task.cancelled")
    assert cancel.actor == "bob" and cancel.reason == "fraud suspected on ************1111"
    assert cancel.created_at is not None
    assert audit_keys(task) == event_keys(task)
    # Append-only.
    with pytest.raises(ValueError, match="append-only"):
        cancel.save()


def test_audit_records_roll_back_with_the_change(load_template: Any) -> None:
    audited(load_template, "atomic", second="doomed, handler_class: test.permanent")
    task = run_task_to_completion(create_task("atomic", namespace="pay"))
    before = AuditRecord.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        operations.cancel_task(task.pk, actor="bob", reason="oops")
        raise RuntimeError("the surrounding transaction fails")
    assert AuditRecord.objects.count() == before
    task.refresh_from_db()
    assert task.status == TaskStatus.ERROR


def test_audited_events_are_logged_at_the_template_level(
    load_template: Any, caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    audited(load_template, "debugged", log_level="debug")
    with (
        caplog.at_level(logging.DEBUG, logger="tasker_django.audit"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        task = run_task_to_completion(create_task("debugged", namespace="pay"))
    lines = [r for r in caplog.records if r.name == "tasker_django.audit"]
    assert len(lines) == AuditRecord.objects.filter(task_id=task.pk).count()
    assert {r.levelno for r in lines} == {logging.DEBUG}
    assert any(r.getMessage().startswith(f"audit task.created task={task.pk}") for r in lines)
    assert CARD not in caplog.text and "s3cr3t" not in caplog.text


@pytest.mark.postgres_only
def test_postgres_fast_path_audits_in_one_transaction(load_template: Any) -> None:
    assert connection.vendor == "postgresql"
    load_template(
        """
name: fast
version: "1.0.0"
security: {audit_logging: {enabled: true}}
step_templates:
  - {name: a, handler_class: test.noop}
  - {name: b, handler_class: test.noop, depends_on_step: a}
  - {name: c, handler_class: test.noop, depends_on_step: b}
"""
    )
    task = run_task_to_completion(create_task("fast"))
    assert task.status == TaskStatus.COMPLETE
    # created + started + 3 x (step.started, step.completed) + completed
    assert AuditRecord.objects.filter(task_id=task.pk).count() == 9
    assert audit_keys(task) == event_keys(task)
    completed = AuditRecord.objects.get(task_id=task.pk, event="task.completed")
    assert completed.created_at == task.completed_at


def test_audit_log_sink_without_and_with_audit_logging(
    load_template: Any, django_capture_on_commit_callbacks: Any
) -> None:
    routing = """
name: {name}
version: "1.0.0"
security: {{audit_logging: {{enabled: {enabled}, retention_period: 12h}}}}
events:
  step_events:
    - {{event: step_completed, publish_to: [audit_log]}}
step_templates:
  - {{name: a, handler_class: test.noop}}
"""
    load_template(routing.format(name="sunk", enabled="false"))
    with django_capture_on_commit_callbacks(execute=True):
        task = run_task_to_completion(create_task("sunk"))
    records = list(AuditRecord.objects.filter(task_id=task.pk))
    assert [r.event for r in records] == ["step.completed"]
    assert records[0].expires_at == records[0].created_at + timedelta(hours=12)
    load_template(routing.format(name="both", enabled="true"))
    with django_capture_on_commit_callbacks(execute=True):
        task = run_task_to_completion(create_task("both"))
    assert audit_keys(task) == event_keys(task)  # no duplicate from the sink


def test_prune_command_deletes_only_expired_records() -> None:
    now = timezone.now()
    AuditRecord.objects.create(event="old", expires_at=now - timedelta(seconds=1))
    AuditRecord.objects.create(event="young", expires_at=now + timedelta(days=1))
    AuditRecord.objects.create(event="forever", expires_at=None)
    out = io.StringIO()
    call_command("tasker_prune_audit", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "1 expired audit record(s) would be deleted (dry run)"
    assert AuditRecord.objects.count() == 3
    out = io.StringIO()
    call_command("tasker_prune_audit", stdout=out)
    assert out.getvalue().strip() == "1 expired audit record(s) deleted"
    assert sorted(AuditRecord.objects.values_list("event", flat=True)) == ["forever", "young"]


# ---------------------------------------------------------------------------
# Admin and API
# ---------------------------------------------------------------------------


def _user(username: str, *codenames: str, **fields: Any) -> User:
    user = User.objects.create_user(username, password="pw", **fields)
    perms = Permission.objects.filter(
        content_type__app_label="tasker_django", codename__in=codenames
    )
    assert perms.count() == len(codenames)
    user.user_permissions.set(perms)
    return user


@pytest.fixture
def audited_task(load_template: Any) -> Any:
    audited(load_template, "shown", include=True)
    return run_task_to_completion(create_task("shown", namespace="pay"))


def test_admin_lists_searches_and_masks(audited_task: Any) -> None:
    viewer = _user("auditor", "view_auditrecord", is_staff=True)
    client = Client()
    client.force_login(viewer)
    changelist = "/admin/tasker_django/auditrecord/"
    page = client.get(changelist)
    assert page.status_code == 200
    assert b"custom.charged" in page.content and b"pay/shown@1.0.0" in page.content
    link = f">Task {audited_task.pk}</a>".encode()
    assert link in client.get(changelist, {"q": f"#{audited_task.pk}"}).content
    assert link not in client.get(changelist, {"q": str(audited_task.pk + 1000)}).content
    assert link not in client.get(changelist, {"q": "nobody"}).content
    filtered = client.get(changelist, {"event": "custom.charged"}).content
    assert filtered.count(link) == 1
    record = AuditRecord.objects.get(task_id=audited_task.pk, event="custom.charged")
    detail = client.get(f"{changelist}{record.pk}/change/")
    assert detail.status_code == 200
    assert CARD.encode() not in detail.content and b"s3cr3t" not in detail.content
    assert b"********" in detail.content
    # Read-only: no add, change or delete.
    assert client.get(f"{changelist}add/").status_code == 403
    assert client.post(f"{changelist}{record.pk}/delete/").status_code == 403
    # With the sensitive-data permission the plain (stored) values show (card numbers
    # only to superusers: docs/security.md).
    privileged = _user("auditor2", "view_auditrecord", "view_sensitive_data", is_staff=True)
    client.force_login(privileged)
    assert b"s3cr3t" in client.get(f"{changelist}{record.pk}/change/").content
    root = User.objects.create_superuser("root", password="pw")
    client.force_login(root)
    assert CARD.encode() in client.get(f"{changelist}{record.pk}/change/").content
    # Staff without view_auditrecord are refused.
    client.force_login(_user("staff", "view_task", is_staff=True))
    assert client.get(changelist).status_code == 403


def test_api_lists_and_filters_with_permission(audited_task: Any, load_template: Any) -> None:
    other = run_task_to_completion(create_task("shown", namespace="pay"))
    client = APIClient()
    client.force_authenticate(_user("auditor", "view_auditrecord"))
    response = client.get("/tasker/audit/", {"task_id": audited_task.pk})
    assert response.status_code == 200, response.content
    body = response.json()
    results = body["results"]
    assert {r["task_id"] for r in results} == {audited_task.pk}
    assert len(results) == AuditRecord.objects.filter(task_id=audited_task.pk).count()
    charged = next(r for r in results if r["event"] == "custom.charged")
    assert charged["payload"]["data"]["card_number"] == "********"
    assert charged["namespace"] == "pay" and charged["template"] == "shown"
    only = client.get("/tasker/audit/", {"event": "task.created", "namespace": "pay"}).json()
    assert sorted(r["task_id"] for r in only["results"]) == sorted([audited_task.pk, other.pk])
    assert client.get("/tasker/audit/", {"namespace": "elsewhere"}).json()["results"] == []
    assert client.get("/tasker/audit/", {"task_id": "x"}).status_code == 400
    refused = APIClient()
    refused.force_authenticate(_user("viewer", "view_task"))
    assert refused.get("/tasker/audit/").status_code == 403
    assert APIClient().get("/tasker/audit/").status_code in (401, 403)


def test_api_hides_namespaces_the_hook_refuses(audited_task: Any) -> None:
    client = APIClient()
    client.force_authenticate(_user("auditor", "view_auditrecord"))
    hook = "tests.test_audit.no_pay"
    with override_settings(TASKER={**settings.TASKER, "API_NAMESPACE_ACCESS": hook}):
        assert client.get("/tasker/audit/").json()["results"] == []


def no_pay(user: Any, namespace: str, action: str) -> bool:
    return namespace != "pay"
