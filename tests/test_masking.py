"""Masking in the admin, the API, logs and commands; PCI mode; security checks; pruning."""

from __future__ import annotations

import base64
import logging
from datetime import date, timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tasker_django import PermanentError, StepHandler, create_task
from tasker_django.models import NamedTask, Task, TaskStatus, WorkflowStep
from tasker_django.security import crypto
from tasker_django.security.checks import template_messages
from tasker_django.security.logging import MaskingFilter
from tasker_django.testing import run_task_to_completion

pytestmark = pytest.mark.django_db

CARD = "4111111111111111"  # Luhn-valid test card
LAST4 = "************1111"


class Leaky(StepHandler, name="sec.leaky"):
    """Returns sensitive fields, logs and fails with the card number in the message."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        card = task.context["card_number"]
        self.logger.info("charging card %s", card)
        if self.config.get("fail"):
            raise PermanentError(f"card {card} declined", context={"card_number": card})
        return {"card_token": "tok_secret_1", "loyalty_code": "LC-77", "ok": True}


TEMPLATE = """
name: {name}
version: "1.0.0"
step_templates:
  - name: charge
    handler_class: sec.leaky
    handler_config: {{fail: {fail}}}
security:
  sensitive_fields: [loyalty_code]
  pci_compliance:
    enabled: {pci}
    data_retention: "90d"
"""

VIEW = ("view_task", "view_workflowstep", "view_stepattempt", "view_taskevent")


def user(name: str, *codenames: str, superuser: bool = False) -> User:
    u = User.objects.create_user(name, password="pw", is_staff=True, is_superuser=superuser)
    u.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="tasker_django", codename__in=VIEW + codenames
        )
    )
    return u


@pytest.fixture
def tasks(load_template: Any) -> dict[str, Task]:
    load_template(TEMPLATE.format(name="ok", fail="false", pci="false"))
    load_template(TEMPLATE.format(name="bad", fail="true", pci="false"))
    ctx = {"card_number": CARD, "amount": 5, "note": f"paid with {CARD}"}
    ok = run_task_to_completion(create_task("ok", context=ctx))
    bad = run_task_to_completion(create_task("bad", context=ctx))
    assert (ok.status, bad.status) == (TaskStatus.COMPLETE, TaskStatus.ERROR)
    return {"ok": ok, "bad": bad}


def page(u: User, name: str, pk: int) -> str:
    client = Client()
    client.force_login(u)
    response = client.get(reverse(f"admin:tasker_django_{name}_change", args=[pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_admin_masks_for_users_without_the_permission(tasks: dict[str, Task]) -> None:
    plain_user = user("clerk")
    bad, ok = tasks["bad"], tasks["ok"]
    html = page(plain_user, "task", bad.pk)
    assert CARD not in html and LAST4 in html  # context note, errors, events
    html = page(plain_user, "task", ok.pk)
    assert "tok_secret_1" not in html and "LC-77" not in html  # results: default + template
    step = WorkflowStep.objects.get(task=bad)
    assert CARD not in page(plain_user, "workflowstep", step.pk)
    attempt = step.attempt_history.get()
    assert CARD not in page(plain_user, "stepattempt", attempt.pk)
    event = bad.events.get(name="step.failed")
    assert CARD not in page(plain_user, "taskevent", event.pk)
    client = Client()
    client.force_login(plain_user)
    for name in ("task", "stepattempt"):
        listing = client.get(reverse(f"admin:tasker_django_{name}_changelist")).content.decode()
        assert CARD not in listing
    dashboard = client.get(reverse("admin:tasker_django_dashboard")).content.decode()
    assert CARD not in dashboard and LAST4 in dashboard
    # A superuser and a user with view_sensitive_data see plain values.
    assert CARD in page(user("root", superuser=True), "task", bad.pk)
    trusted = user("trusted", "view_sensitive_data")
    assert "tok_secret_1" in page(trusted, "task", ok.pk)
    # Card numbers in free text stay masked for every non-superuser.
    assert f"card {CARD} declined" not in page(trusted, "workflowstep", step.pk)


def api_get(u: User, path: str) -> Any:
    client = APIClient()
    client.force_authenticate(u)
    response = client.get(path)
    assert response.status_code == 200, response.content
    return response.json()


def test_api_masks_tasks_steps_events_and_attempts(tasks: dict[str, Task]) -> None:
    clerk = user("clerk")
    bad, ok = tasks["bad"], tasks["ok"]
    detail = api_get(clerk, f"/tasker/tasks/{bad.pk}/")
    assert detail["context"]["card_number"] == "********"
    assert detail["context"]["note"] == f"paid with {LAST4}"
    assert detail["context"]["amount"] == 5
    assert CARD not in str(detail)
    results = api_get(clerk, f"/tasker/tasks/{ok.pk}/")["steps"][0]["results"]
    assert results == {"card_token": "********", "loyalty_code": "********", "ok": True}
    step = WorkflowStep.objects.get(task=bad)
    assert CARD not in str(api_get(clerk, f"/tasker/steps/{step.pk}/"))
    assert CARD not in str(api_get(clerk, f"/tasker/tasks/{bad.pk}/events/"))
    root = user("root", superuser=True)
    assert api_get(root, f"/tasker/tasks/{bad.pk}/")["context"]["card_number"] == CARD
    trusted = user("trusted", "view_sensitive_data")
    assert api_get(trusted, f"/tasker/tasks/{ok.pk}/")["steps"][0]["results"]["card_token"] == (
        "tok_secret_1"
    )


def test_pci_masks_card_data_even_with_the_permission(load_template: Any) -> None:
    load_template(TEMPLATE.format(name="pci", fail="false", pci="true"))
    task = run_task_to_completion(create_task("pci", context={"card_number": CARD, "pin": "1"}))
    trusted = user("trusted", "view_sensitive_data")
    data = api_get(trusted, f"/tasker/tasks/{task.pk}/")
    assert data["context"]["card_number"] == "********"
    assert data["context"]["pin"] == "1"  # not card data: the permission shows it
    assert data["steps"][0]["results"]["card_token"] == "********"
    root = user("root", superuser=True)
    assert api_get(root, f"/tasker/tasks/{task.pk}/")["context"]["card_number"] == CARD


def test_logs_are_masked(tasks: dict[str, Task], caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="tasker_django")
    load = NamedTask.objects.get(name="bad")
    assert load is not None
    run_task_to_completion(create_task("bad", context={"card_number": CARD}))
    text = caplog.text
    assert "charging card" in text and LAST4 in text  # the handler's own logger
    assert "declined" in text and CARD not in text  # the engine's failure line
    record = logging.LogRecord("other", logging.INFO, __file__, 1, "pan %s", (CARD,), None)
    assert MaskingFilter().filter(record) is True
    assert record.getMessage() == f"pan {LAST4}"


def test_tasker_task_command_masks_by_default(tasks: dict[str, Task]) -> None:
    out = StringIO()
    call_command("tasker_task", str(tasks["bad"].pk), "--data", stdout=out)
    text = out.getvalue()
    assert CARD not in text and '"card_number": "********"' in text and LAST4 in text
    out = StringIO()
    call_command("tasker_task", str(tasks["ok"].pk), "--data", "--show-sensitive", stdout=out)
    assert CARD in out.getvalue() and "tok_secret_1" in out.getvalue()


def test_prune_deletes_finished_tasks_past_retention(load_template: Any) -> None:
    load_template(TEMPLATE.format(name="pci", fail="false", pci="true"))
    load_template(TEMPLATE.format(name="keep", fail="false", pci="false"))
    old = run_task_to_completion(create_task("pci", context={"card_number": CARD}))
    new = run_task_to_completion(create_task("pci", context={"card_number": CARD}))
    other = run_task_to_completion(create_task("keep", context={"card_number": CARD}))
    running = create_task("pci", context={"card_number": CARD})
    long_ago = timezone.now() - timedelta(days=91)
    Task.objects.filter(pk__in=[old.pk, other.pk, running.pk]).update(
        completed_at=long_ago, updated_at=long_ago
    )
    out = StringIO()
    call_command("tasker_prune_tasks", "--dry-run", stdout=out)
    assert "would delete 1 task(s)" in out.getvalue()
    assert Task.objects.filter(pk=old.pk).exists()
    out = StringIO()
    call_command("tasker_prune_tasks", stdout=out)
    assert "deleted 1 task(s)" in out.getvalue()
    assert set(Task.objects.values_list("pk", flat=True)) == {new.pk, other.pk, running.pk}
    # Its steps, edges, attempts and events went with it (a step's events by their task:
    # the event log's step column has no index, and no cascade of its own); the others'
    # stayed.
    from tasker_django.models import StepAttempt, TaskEvent, WorkflowStep, WorkflowStepEdge

    for model in (WorkflowStep, WorkflowStepEdge, StepAttempt, TaskEvent):
        assert not model.objects.filter(task_id=old.pk).exists(), model
        # (a one-step template: no edges to keep)
        assert model is WorkflowStepEdge or model.objects.filter(task_id=new.pk).exists()
    assert (
        not TaskEvent.objects.exclude(step=None)
        .exclude(step_id__in=WorkflowStep.objects.values("pk"))
        .exists()
    )


KEY = base64.b64encode(bytes(32)).decode()


def encryption_template(**encryption: Any) -> dict[str, Any]:
    return {
        "namespace": "default",
        "name": "t",
        "version": "1",
        "sections": {"security": {"encryption": {"enabled": True, **encryption}}},
    }


def test_encryption_checks() -> None:
    with override_settings(TASKER={"ENCRYPTION_KEYS": []}):
        (error,) = template_messages(encryption_template())
        assert error.id == "tasker_django.E010" and "ENCRYPTION_KEYS" in error.msg
    with override_settings(TASKER={"ENCRYPTION_KEYS": [KEY]}):
        assert template_messages(encryption_template(algorithm="AES-256")) == []
        (warning,) = template_messages(encryption_template(algorithm="DES"))
        assert warning.id == "tasker_django.W011" and "'DES'" in warning.msg
        (warning,) = template_messages(encryption_template(key_rotation_interval="30d"))
        assert warning.id == "tasker_django.W010" and "unknown" in warning.msg
    fresh = {"key": KEY, "created": date.today().isoformat()}
    with override_settings(TASKER={"ENCRYPTION_KEYS": [fresh]}):
        assert template_messages(encryption_template(key_rotation_interval="30d")) == []
        later = date.today() + timedelta(days=45)
        (warning,) = template_messages(encryption_template(key_rotation_interval="30d"), later)
        assert warning.id == "tasker_django.W010" and "45 days old" in warning.msg
    with override_settings(TASKER={"ENCRYPTION_KEYS": ["bm90IGEga2V5"]}):
        from tasker_django.security.checks import check_encryption_keys

        (error,) = check_encryption_keys()
        assert error.id == "tasker_django.E010" and "bm90IGEga2V5" not in error.msg
    assert crypto.template_encrypts(encryption_template())


def test_seed_payment_workflow_security_warnings(load_template: Any) -> None:
    from pathlib import Path

    seed = Path(__file__).resolve().parents[2] / "shared" / "seed-templates"
    if not (seed / "payment_workflow.yaml").exists():
        pytest.skip("seed templates not present")
    named = load_template((seed / "payment_workflow.yaml").read_text())
    with override_settings(TASKER={"ENCRYPTION_KEYS": [{"key": KEY, "created": "2099-01-01"}]}):
        messages = template_messages(named.template, date(2099, 1, 2))
    # Only the key without behaviour is reported.
    assert [(m.id, "audit_level" in m.msg) for m in messages] == [("tasker_django.W011", True)]
