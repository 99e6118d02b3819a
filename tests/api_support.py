"""Helpers shared by the API tests (tests/test_api_*.py); fixtures are in api_fixtures.py."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import Permission, User
from rest_framework.test import APIClient

from tasker_django import create_task
from tasker_django.models import Task, TaskStatus, WorkflowStep
from tasker_django.testing import run_task_to_completion

PASSWORD = "pw-for-tests"

#: Three steps: pay, then notify and audit in parallel; the context needs an amount.
PAYMENT = """
name: api_payment
namespace: api
version: "1.0.0"
description: "Pay, then notify and audit"
schema:
  type: object
  required: [amount]
  properties:
    amount: {type: number, minimum: 0}
    customer: {type: object, properties: {id: {type: integer}}}
step_templates:
  - {name: pay, handler_class: test.echo, handler_config: {api_key: secret-value}}
  - {name: notify, handler_class: test.echo, depends_on_step: pay}
  - {name: audit, handler_class: test.echo, depends_on_step: pay}
"""

PAYMENT_V2 = PAYMENT.replace('version: "1.0.0"', 'version: "1.2.0"').replace(
    "Pay, then notify and audit", "Pay, notify, audit (v2)"
)

#: The first step fails for good; the second depends on it.
FAILING = """
name: api_failing
namespace: api
version: "1.0.0"
step_templates:
  - {name: charge, handler_class: test.permanent}
  - {name: receipt, handler_class: test.echo, depends_on_step: charge}
"""

#: A template in another namespace (for the namespace hook).
SECRET = """
name: api_secret
namespace: secret
version: "1.0.0"
step_templates:
  - {name: only, handler_class: test.echo}
"""

VIEW_ALL = ["view_task", "view_workflowstep", "view_namedtask"]
OPERATOR = [*VIEW_ALL, "add_task", "cancel_task", "retry_step", "resolve_step", "cancel_step"]


def make_user(
    username: str, codenames: Sequence[str] = (), password: str = PASSWORD, **fields: Any
) -> User:
    user = User.objects.create_user(username, password=password, **fields)
    perms = Permission.objects.filter(
        content_type__app_label="tasker_django", codename__in=codenames
    )
    assert perms.count() == len(set(codenames)), codenames
    user.user_permissions.set(perms)
    return user


def basic(username: str, password: str = PASSWORD) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return f"Basic {token}"


def client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=basic(user.username))
    return client


def finished_task(name: str = "api_payment", namespace: str = "api", **kwargs: Any) -> Task:
    kwargs.setdefault("context", {"amount": 10} if name == "api_payment" else {})
    return run_task_to_completion(create_task(name, namespace=namespace, **kwargs))


def failed_task() -> Task:
    task = finished_task("api_failing")
    assert task.status == TaskStatus.ERROR
    return task


def step(task: Task, name: str) -> WorkflowStep:
    return WorkflowStep.objects.get(task=task, name=name)


def url(path: str) -> str:
    return f"/tasker/{path.lstrip('/')}"


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.content[:2000])
    body = response.json()
    assert set(body) == {"detail", "code", "errors"}, body
    if code is not None:
        assert body["code"] == code, body
    return body
