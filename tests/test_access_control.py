"""security.access_control: allowed_roles (Django groups) in the API and the admin."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core import checks
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from tasker_django import create_task
from tasker_django.models import Task, TaskStatus, WorkflowStep
from tasker_django.security.checks import template_messages
from tasker_django.testing import run_task_to_completion

pytestmark = pytest.mark.django_db

RESTRICTED = """
name: guarded
version: "1.0.0"
step_templates:
  - name: pay
    handler_class: test.permanent
security:
  access_control:
    authentication_required: true
    authorization_method: "rbac"
    allowed_roles: ["payment_processor", "admin"]
"""
OPEN = """
name: open
version: "1.0.0"
step_templates:
  - name: pay
    handler_class: test.noop
"""
PERMS = ("view_task", "add_task", "view_workflowstep", "view_stepattempt", "view_taskevent")
OPS = ("retry_step", "cancel_task", "resolve_step", "cancel_step")


def make_user(name: str, groups: tuple[str, ...] = (), superuser: bool = False) -> User:
    user = User.objects.create_user(name, password="pw", is_staff=True, is_superuser=superuser)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="tasker_django", codename__in=PERMS + OPS
        )
    )
    for group in groups:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def setup(load_template: Any) -> dict[str, Any]:
    load_template(RESTRICTED)
    load_template(OPEN)
    guarded = run_task_to_completion(create_task("guarded", context={"n": 1}))
    opened = run_task_to_completion(create_task("open"))
    assert guarded.status == TaskStatus.ERROR
    return {
        "guarded": guarded,
        "open": opened,
        "member": make_user("member", ("payment_processor",)),
        "other": make_user("other", ("support",)),
        "root": make_user("root", superuser=True),
    }


def api(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def ids(response: Any) -> set[int]:
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def test_api_lists_and_details(setup: dict[str, Any]) -> None:
    guarded, opened = setup["guarded"], setup["open"]
    assert ids(api(setup["other"]).get("/tasker/tasks/")) == {opened.pk}
    assert ids(api(setup["member"]).get("/tasker/tasks/")) == {opened.pk, guarded.pk}
    assert ids(api(setup["root"]).get("/tasker/tasks/")) == {opened.pk, guarded.pk}
    assert api(setup["other"]).get(f"/tasker/tasks/{guarded.pk}/").status_code == 404
    assert api(setup["member"]).get(f"/tasker/tasks/{guarded.pk}/").status_code == 200
    assert api(setup["other"]).get(f"/tasker/tasks/{guarded.pk}/events/").status_code == 404
    step = WorkflowStep.objects.get(task=guarded)
    assert api(setup["other"]).get(f"/tasker/steps/{step.pk}/").status_code == 404
    assert step.pk not in ids(api(setup["other"]).get("/tasker/steps/"))
    assert step.pk in ids(api(setup["member"]).get("/tasker/steps/"))


def test_api_create_and_operate(setup: dict[str, Any]) -> None:
    body = {"namespace": "default", "name": "guarded", "context": {}}
    response = api(setup["other"]).post("/tasker/tasks/", body, format="json")
    assert response.status_code == 403, response.content
    assert "allowed" in response.json()["detail"]
    assert api(setup["member"]).post("/tasker/tasks/", body, format="json").status_code == 201
    step = WorkflowStep.objects.get(task=setup["guarded"])
    other = api(setup["other"])
    retry = other.post(f"/tasker/steps/{step.pk}/retry/", {"reason": "x"}, format="json")
    assert retry.status_code == 404
    cancel = other.post(f"/tasker/tasks/{setup['guarded'].pk}/cancel/", {}, format="json")
    assert cancel.status_code == 404
    assert Task.objects.get(pk=setup["guarded"].pk).status == TaskStatus.ERROR
    ok = api(setup["member"]).post(f"/tasker/steps/{step.pk}/retry/", {}, format="json")
    assert ok.status_code == 200, ok.content


def admin_client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_admin_changelist_detail_and_actions(setup: dict[str, Any]) -> None:
    guarded, opened = setup["guarded"], setup["open"]
    changelist = reverse("admin:tasker_django_task_changelist")
    detail = reverse("admin:tasker_django_task_change", args=[guarded.pk])
    other, member = admin_client(setup["other"]), admin_client(setup["member"])
    html = other.get(changelist).content.decode()
    assert f'value="{opened.pk}"' in html and f'value="{guarded.pk}"' not in html
    assert f'value="{guarded.pk}"' in member.get(changelist).content.decode()
    # Detail: Django's admin redirects a missing object to the index.
    assert other.get(detail).status_code == 302
    assert member.get(detail).status_code == 200
    step = WorkflowStep.objects.get(task=guarded)
    step_url = reverse("admin:tasker_django_workflowstep_change", args=[step.pk])
    assert other.get(step_url).status_code == 302
    steps = other.get(reverse("admin:tasker_django_workflowstep_changelist"))
    assert f'value="{step.pk}"' not in steps.content.decode()
    # Operator views answer 403, and nothing changes.
    retry = reverse("admin:tasker_django_workflowstep_retry", args=[step.pk])
    assert other.post(retry, {"reason": "x"}).status_code == 403
    cancel = reverse("admin:tasker_django_task_cancel", args=[guarded.pk])
    assert other.post(cancel, {"reason": "x"}).status_code == 403
    # A bulk action over a forged selection skips the hidden task.
    other.post(
        changelist,
        {
            "action": "bulk_cancel",
            "_selected_action": [guarded.pk],
            "tasker_confirm": "yes",
            "reason": "x",
        },
    )
    assert Task.objects.get(pk=guarded.pk).status == TaskStatus.ERROR
    assert member.post(retry, {"reason": "ok"}).status_code == 302
    assert WorkflowStep.objects.get(pk=step.pk).status != "error"


def test_checks_name_the_keys_without_effect() -> None:
    template = {
        "namespace": "default",
        "name": "t",
        "version": "1",
        "sections": {
            "security": {
                "access_control": {
                    "authentication_required": False,
                    "authorization_method": "abac",
                    "allowed_roles": "admin",
                },
                "pci_compliance": {"enabled": True, "audit_level": "level_1"},
            }
        },
    }
    messages = template_messages(template)
    assert {m.id for m in messages} == {"tasker_django.W011"}
    text = " ".join(m.msg for m in messages)
    for key in (
        "access_control.authentication_required",
        "access_control.authorization_method",
        "'abac'",
        "access_control.allowed_roles",
        "pci_compliance.audit_level",
    ):
        assert key in text, key
    assert all(isinstance(m, checks.Warning) for m in messages)


AUDITED = """
name: guarded_audited
version: "1.0.0"
step_templates:
  - name: pay
    handler_class: test.noop
security:
  access_control:
    allowed_roles: ["payment_processor"]
  audit_logging:
    enabled: true
"""
OPEN_AUDITED = """
name: open_audited
version: "1.0.0"
step_templates:
  - name: pay
    handler_class: test.noop
security:
  audit_logging:
    enabled: true
"""


def test_audit_records_follow_allowed_roles(setup: dict[str, Any], load_template: Any) -> None:
    load_template(AUDITED)
    load_template(OPEN_AUDITED)
    hidden = run_task_to_completion(create_task("guarded_audited"))
    shown = run_task_to_completion(create_task("open_audited"))
    for user in (setup["other"], setup["member"]):
        user.user_permissions.add(Permission.objects.get(codename="view_auditrecord"))

    def task_ids(user: User) -> set[int]:
        response = api(user).get("/tasker/audit/", {"page_size": 500})
        assert response.status_code == 200, response.content
        return {row["task_id"] for row in response.json()["results"]}

    assert task_ids(setup["other"]) == {shown.pk}
    assert task_ids(setup["member"]) == {shown.pk, hidden.pk}
    assert task_ids(setup["root"]) == {shown.pk, hidden.pk}

    browser = Client()
    browser.force_login(setup["other"])
    page = browser.get(reverse("admin:tasker_django_auditrecord_changelist"))
    assert page.status_code == 200
    rows = page.context["cl"].result_list
    assert {r.task_id for r in rows} == {shown.pk}
