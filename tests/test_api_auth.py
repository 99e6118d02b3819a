"""API auth: anonymous, authenticated without permissions, with exactly the permissions
each endpoint needs, the namespace hook, session auth with CSRF, and error bodies."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from tasker_django import create_task
from tasker_django.models import Task, TaskStatus, WorkflowStep
from tests.api_support import (
    PASSWORD,
    assert_error,
    basic,
    client_for,
    failed_task,
    make_user,
    step,
    url,
)

pytest_plugins = ["tests.api_fixtures"]

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_fast_hasher")]

CREATE = {"namespace": "api", "name": "api_payment", "context": {"amount": 1}}
#: (method, path, permission codenames it needs, body). {t}: a failed task, {s}: its step.
ENDPOINTS: list[tuple[str, str, tuple[str, ...], Any]] = [
    ("get", "tasks/", ("view_task",), None),
    ("post", "tasks/", ("add_task",), CREATE),
    ("get", "tasks/{t}/", ("view_task",), None),
    ("post", "tasks/{t}/cancel/", ("cancel_task",), {}),
    ("post", "tasks/{t}/retry-failed/", ("retry_step",), {}),
    ("get", "tasks/{t}/events/", ("view_task",), None),
    ("get", "tasks/{t}/steps/", ("view_task",), None),
    ("get", "tasks/{t}/graph/", ("view_task",), None),
    ("get", "tasks/{t}/graph/mermaid/", ("view_task",), None),
    ("get", "tasks/{t}/graph/svg/", ("view_task",), None),
    ("get", "steps/", ("view_workflowstep",), None),
    ("get", "steps/{s}/", ("view_workflowstep",), None),
    ("post", "steps/{s}/retry/", ("retry_step",), {}),
    ("post", "steps/{s}/resolve/", ("resolve_step",), {}),
    ("post", "steps/{s}/complete/", ("resolve_step",), {"results": {"ok": True}}),
    ("post", "steps/{s}/cancel/", ("cancel_step",), {}),
    ("get", "namespaces/", ("view_namedtask",), None),
    ("get", "templates/", ("view_namedtask",), None),
    ("get", "templates/api/api_failing/", ("view_namedtask",), None),
    ("get", "templates/api/api_failing/1.0.0/", ("view_namedtask",), None),
    ("get", "templates/api/api_failing/1.0.0/graph/", ("view_namedtask",), None),
    ("get", "templates/api/api_failing/1.0.0/graph/mermaid/", ("view_namedtask",), None),
    ("get", "templates/api/api_failing/1.0.0/graph/svg/", ("view_namedtask",), None),
    ("get", "handlers/", ("view_namedtask",), None),
    ("get", "health/status/", ("view_task",), None),
    ("get", "metrics/", ("view_task",), None),
    ("get", "schema/", (), None),
    ("get", "docs/", (), None),
]
IDS = [f"{m} {p}" for m, p, _, _ in ENDPOINTS]


def call(client: APIClient, method: str, path: str, body: Any, task: Task) -> Any:
    charge = step(task, "charge")
    target = url(path.format(t=task.pk, s=charge.pk))
    if method == "get":
        return client.get(target)
    return client.post(target, body, format="json")


@pytest.mark.parametrize(("method", "path", "perms", "body"), ENDPOINTS, ids=IDS)
def test_anonymous_is_401_with_a_challenge(
    api_templates: Any, api_anon: APIClient, method: str, path: str, perms: Any, body: Any
) -> None:
    task = failed_task()
    response = call(api_anon, method, path, body, task)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Basic realm="api"'
    if not path.startswith(("schema", "docs")):
        assert response.json() == {
            "detail": "Authentication credentials were not provided.",
            "code": "not_authenticated",
            "errors": [],
        }


@pytest.mark.parametrize(("method", "path", "perms", "body"), ENDPOINTS, ids=IDS)
def test_permissions_per_endpoint(
    api_templates: Any, method: str, path: str, perms: tuple[str, ...], body: Any
) -> None:
    task = failed_task()
    before = Task.objects.values_list("pk", "status").order_by("pk")
    steps_before = list(WorkflowStep.objects.values_list("pk", "status").order_by("pk"))
    # Every other tasker permission, but not the ones this endpoint needs.
    from tests.api_support import OPERATOR

    others = [p for p in OPERATOR if p not in perms]
    denied = call(client_for(make_user("without", others)), method, path, body, task)
    if perms:
        assert_error(denied, 403, "permission_denied")
        assert denied.json()["detail"] == "You do not have permission to perform this action."
        assert list(before) == list(Task.objects.values_list("pk", "status").order_by("pk"))
        assert steps_before == list(WorkflowStep.objects.values_list("pk", "status").order_by("pk"))
    else:
        assert denied.status_code == 200
    allowed = call(client_for(make_user("with", list(perms))), method, path, body, task)
    assert allowed.status_code in (200, 201), allowed.content[:500]


@pytest.mark.parametrize("path", ["health/live/", "health/ready/"])
def test_health_probes_need_no_auth(api_anon: APIClient, path: str, db: Any) -> None:
    response = api_anon.get(url(path))
    assert response.status_code == 200 and response.json()["status"] == "ok"
    # Bad credentials are not even looked at.
    api_anon.credentials(HTTP_AUTHORIZATION=basic("ghost", "wrong"))
    assert api_anon.get(url(path)).status_code == 200


def test_bad_credentials_and_inactive_users(api_templates: Any) -> None:
    make_user("alice", ["view_task"])
    make_user("sleepy", ["view_task"], is_active=False)
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION=basic("alice", "nope"))
    body = assert_error(wrong.get(url("tasks/")), 401, "authentication_failed")
    assert body["detail"] == "Invalid username/password."
    unknown = APIClient()
    unknown.credentials(HTTP_AUTHORIZATION=basic("nobody-here", "nope"))
    assert unknown.get(url("tasks/")).json() == body  # no hint whether the user exists
    inactive = APIClient()
    inactive.credentials(HTTP_AUTHORIZATION=basic("sleepy", PASSWORD))
    assert inactive.get(url("tasks/")).status_code == 401


def test_session_auth_and_csrf(api_templates: Any) -> None:
    make_user("browser", ["view_task", "add_task"])
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="browser", password=PASSWORD)
    assert client.get(url("tasks/")).status_code == 200
    response = client.post(url("tasks/"), CREATE, format="json")
    body = assert_error(response, 403, "permission_denied")
    assert body["detail"].startswith("CSRF Failed")
    assert Task.objects.count() == 0


def test_actor_is_the_authenticated_user(api_templates: Any) -> None:
    task = failed_task()
    client = client_for(make_user("ops-jane", ["resolve_step"]))
    client.post(url(f"steps/{step(task, 'charge').pk}/resolve/"), {"reason": "x"}, format="json")
    assert task.events.get(name="action.resolve_step").actor == "ops-jane"


# -- the namespace hook --------------------------------------------------------------------

CALLS: list[tuple[str, str, str]] = []


def namespace_hook(user: Any, namespace: str, action: str) -> bool:
    """Test hook: nobody sees 'secret'; only 'boss' may cancel; 'default' hidden from 'blind'."""
    CALLS.append((user.get_username(), namespace, action))
    if namespace == "secret":
        return False
    if namespace == "default" and user.get_username() == "blind":
        return False
    return action != "cancel" or user.get_username() == "boss"


HOOK = {"API_NAMESPACE_ACCESS": "tests.test_api_auth.namespace_hook"}


@override_settings(TASKER=HOOK)
def test_namespace_hook_hides_objects(api_templates: Any) -> None:
    visible = failed_task()
    hidden = create_task("api_secret", namespace="secret")
    client = client_for(make_user("viewer", ["view_task", "view_workflowstep", "view_namedtask"]))
    CALLS.clear()
    assert [t["id"] for t in client.get(url("tasks/")).json()["results"]] == [visible.pk]
    assert ("viewer", "secret", "view") in CALLS
    missing = client.get(url("tasks/999999/")).json()
    assert client.get(url(f"tasks/{hidden.pk}/")).json() == missing  # same 404 as no task
    hidden_step = step(hidden, "only")
    for path in (
        f"tasks/{hidden.pk}/events/",
        f"tasks/{hidden.pk}/steps/",
        f"tasks/{hidden.pk}/graph/svg/",
        f"steps/{hidden_step.pk}/",
        "templates/secret/api_secret/",
        "templates/secret/api_secret/1.0.0/graph/",
    ):
        assert_error(client.get(url(path)), 404, "not_found")
    assert hidden_step.pk not in [s["id"] for s in client.get(url("steps/")).json()["results"]]
    assert [n["name"] for n in client.get(url("namespaces/")).json()["results"]] == ["api"]
    templates_seen = {t["namespace"] for t in client.get(url("templates/")).json()["results"]}
    assert templates_seen == {"api"}
    status = client.get(url("health/status/")).json()
    assert sum(status["tasks"].values()) == 1  # the hidden task is not counted
    blind = client_for(make_user("blind", ["view_namedtask"]))
    assert (
        blind.get(url("handlers/")).json()["count"] < client.get(url("handlers/")).json()["count"]
    )


@override_settings(TASKER=HOOK)
def test_namespace_hook_denies_actions(api_templates: Any) -> None:
    task = create_task("api_payment", namespace="api", context={"amount": 1})
    operator = client_for(make_user("operator", ["view_task", "cancel_task", "add_task"]))
    body = assert_error(operator.post(url(f"tasks/{task.pk}/cancel/"), {}, format="json"), 403)
    assert body["detail"] == "You do not have permission to perform this action."
    task.refresh_from_db()
    assert task.status != TaskStatus.CANCELLED
    boss = client_for(make_user("boss", ["view_task", "cancel_task"]))
    assert boss.post(url(f"tasks/{task.pk}/cancel/"), {}, format="json").status_code == 200
    CALLS.clear()
    denied = operator.post(
        url("tasks/"), {"namespace": "secret", "name": "api_secret"}, format="json"
    )
    assert_error(denied, 403, "permission_denied")
    assert CALLS == [("operator", "secret", "create")]
    assert not Task.objects.filter(named_task__namespace__name="secret").exists()
    created = operator.post(url("tasks/"), CREATE, format="json")
    assert created.status_code == 201


def test_metrics_can_be_made_public(api_templates: Any, api_anon: APIClient) -> None:
    assert api_anon.get(url("metrics/")).status_code == 401
    with override_settings(TASKER={"API_METRICS_PUBLIC": True}):
        response = api_anon.get(url("metrics/"))
        assert response.status_code == 200 and b"tasker_tasks" in response.content


def test_anonymous_is_403_without_a_challenging_auth_class(
    api_templates: Any, api_anon: APIClient, monkeypatch: Any
) -> None:
    from rest_framework.authentication import SessionAuthentication

    from tasker_django.api.views import TaskViewSet

    monkeypatch.setattr(TaskViewSet, "authentication_classes", [SessionAuthentication])
    body = assert_error(api_anon.get(url("tasks/")), 403, "not_authenticated")
    assert body["detail"] == "Authentication credentials were not provided."


#: The schema answers only OpenAPI media types (406 for text/html).
BROWSABLE = [e for e in ENDPOINTS if e[0] == "get" and e[1] != "schema/"]


@pytest.mark.parametrize(
    ("method", "path", "perms", "body"), BROWSABLE, ids=[e[1] for e in BROWSABLE]
)
def test_browsable_api_renders(
    api_templates: Any, method: str, path: str, perms: Any, body: Any
) -> None:
    task = failed_task()
    client = client_for(make_user("browser", list(perms)))
    charge = step(task, "charge")
    response = client.get(url(path.format(t=task.pk, s=charge.pk)), HTTP_ACCEPT="text/html")
    assert response.status_code == 200, response.content[:500]
