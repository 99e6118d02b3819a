"""The admin: pages, filters, search, operator actions, permissions, query counts, escaping."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tasker_django import create_task
from tasker_django.admin.charts import render_bar_chart
from tasker_django.models import (
    StepAttempt,
    StepStatus,
    Task,
    TaskEvent,
    TaskStatus,
    WorkflowStep,
)
from tasker_django.testing import run_task_to_completion

from .conftest import chain_yaml

pytestmark = pytest.mark.django_db

FAILING = """
name: failing
namespace: shop
version: "1.0.0"
step_templates:
  - {name: pay, handler_class: test.permanent}
  - {name: notify, handler_class: test.echo, depends_on_step: pay}
  - {name: audit, handler_class: test.noop, depends_on_step: notify}
"""

OPERATOR_PERMS = ("retry_step", "resolve_step", "cancel_step", "cancel_task")


def _view_perms() -> list[Permission]:
    return list(
        Permission.objects.filter(
            content_type__app_label="tasker_django", codename__startswith="view_"
        )
    )


@pytest.fixture
def viewer() -> User:
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(*_view_perms())
    return user


@pytest.fixture
def operator() -> User:
    user = User.objects.create_user("operator", password="pw", is_staff=True)
    user.user_permissions.add(
        *_view_perms(),
        *Permission.objects.filter(
            content_type__app_label="tasker_django", codename__in=OPERATOR_PERMS
        ),
    )
    return user


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def failed_task(load_template: Any) -> Task:
    load_template(FAILING)
    task = run_task_to_completion(
        create_task(
            "failing",
            namespace="shop",
            context={"order_id": 4242, "customer": "ada@example.com"},
            tags=["vip", "eu-west"],
            initiator="checkout-service",
        )
    )
    assert task.status == TaskStatus.ERROR
    return task


def step(task: Task, name: str) -> WorkflowStep:
    return WorkflowStep.objects.get(task=task, name=name)


def task_url(task: Task) -> str:
    return reverse("admin:tasker_django_task_change", args=[task.pk])


def step_url(s: WorkflowStep) -> str:
    return reverse("admin:tasker_django_workflowstep_change", args=[s.pk])


CHANGELIST = "/admin/tasker_django/task/"


def graph_svg(html: str) -> str:
    """The step graph of a page (the admin's own icons are SVGs too)."""
    start = html.index('id="tasker-graph"')
    match = re.search(r"<svg .*?</svg>", html[start:], re.S)
    assert match is not None
    return match.group(0)


def row_ids(response: Any) -> list[int]:
    return [
        int(pk)
        for pk in re.findall(
            r'href="/admin/tasker_django/task/(\d+)/change/', str(response.content, "utf-8")
        )
    ]


# ---------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------


def test_changelist_shows_template_badge_progress_and_latest_error(
    failed_task: Task, viewer: User
) -> None:
    response = client_for(viewer).get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert "shop/failing@1.0.0" in html
    assert 'class="tasker-badge tasker-status-error"' in html
    assert 'class="tasker-progress-bar" style="width: 0%"' in html
    assert "0/3" in html
    assert "PermanentError: card declined" in html
    assert 'class="tasker-failed-count">1<' in html
    # view-only staff: no action checkboxes or action select
    assert 'name="action"' not in html
    assert "Dashboard" in html


def test_changelist_filters(load_template: Any, failed_task: Task, viewer: User) -> None:
    load_template(chain_yaml("chain", 2))
    other = run_task_to_completion(create_task("chain"))
    assert other.status == TaskStatus.COMPLETE
    client = client_for(viewer)
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    tomorrow = today + timedelta(days=1)
    cases = {
        "status__exact=error": [failed_task.pk],
        "status__exact=complete": [other.pk],
        "namespace=shop": [failed_task.pk],
        "namespace=default": [other.pk],
        "template=default/chain": [other.pk],
        "template=shop/failing&version=1.0.0": [failed_task.pk],
        "version=1.0.0": [other.pk, failed_task.pk],
        urlencode({"created_at__gte": str(today), "created_at__lt": str(tomorrow)}): [
            other.pk,
            failed_task.pk,
        ],
        urlencode({"created_at__gte": str(tomorrow)}): [],
    }
    for query, expected in cases.items():
        response = client.get(f"{CHANGELIST}?{query}")
        assert response.status_code == 200, query
        assert sorted(set(row_ids(response))) == sorted(expected), query
    html = client.get(CHANGELIST).content.decode()
    for title in ("By status", "By namespace", "By template", "By version", "By created at"):
        assert title in html


def test_changelist_search(load_template: Any, failed_task: Task, viewer: User) -> None:
    load_template(chain_yaml("chain", 1))
    run_task_to_completion(create_task("chain", tags=["batch"], initiator="cron"))
    client = client_for(viewer)
    pk = failed_task.pk
    # id, tags, initiator, context values and keys; case-insensitive
    for term in (
        f"{pk}",
        f"#{pk}",
        "vip",
        "eu-west",
        "checkout",
        "4242",
        "ada@example",
        "order_id",
        "VIP",
    ):
        response = client.get(CHANGELIST, {"q": term})
        assert response.status_code == 200
        assert set(row_ids(response)) == {pk}, term


def test_search_with_no_match_and_several_words(failed_task: Task, viewer: User) -> None:
    client = client_for(viewer)
    assert row_ids(client.get(CHANGELIST, {"q": "nothing-like-this"})) == []
    assert set(row_ids(client.get(CHANGELIST, {"q": "vip checkout"}))) == {failed_task.pk}
    assert row_ids(client.get(CHANGELIST, {"q": "vip cron"})) == []


def test_task_page_shows_graph_steps_errors_reasons_and_timeline(
    failed_task: Task, viewer: User
) -> None:
    response = client_for(viewer).get(task_url(failed_task))
    assert response.status_code == 200
    html = response.content.decode()
    svg = graph_svg(html)
    ET.fromstring(svg)  # well-formed XML
    for s in WorkflowStep.objects.filter(task=failed_task):
        assert f'href="{step_url(s)}"' in svg
    assert 'data-status="error"' in svg and "#fee2e2" in svg  # the failed node is red
    # steps table: status, attempts, error, waiting reasons
    assert "PermanentError: card declined" in html
    assert "blocked: parent failed: pay" in html
    assert re.search(r"failed after 1 of \d attempts: card declined", html)
    assert "waiting for notify" in html
    # context as formatted JSON, timeline of events
    assert "&quot;order_id&quot;: 4242" in html
    assert "task.failed" in html and "step.failed" in html
    # view-only: no operator buttons, no save buttons
    for marker in (
        "tasker-retry-failed",
        "tasker-cancel-task",
        "tasker-retry-step",
        'name="_save"',
    ):
        assert marker not in html


def test_task_page_shows_results_and_operator_buttons(load_template: Any, operator: User) -> None:
    load_template(chain_yaml("chain", 2))
    task = run_task_to_completion(create_task("chain"))
    html = client_for(operator).get(task_url(task)).content.decode()
    assert "&quot;step&quot;: &quot;s1&quot;" in html  # results as formatted JSON
    assert "tasker-cancel-task" not in html  # complete: nothing to cancel
    assert "tasker-retry-failed" not in html


def test_operator_sees_buttons_on_failed_task(failed_task: Task, operator: User) -> None:
    html = client_for(operator).get(task_url(failed_task)).content.decode()
    assert 'id="tasker-retry-failed"' in html
    assert 'id="tasker-cancel-task"' in html  # a failed task can still be cancelled
    assert 'class="tasker-retry-step"' in html
    assert (
        reverse("admin:tasker_django_workflowstep_retry", args=[step(failed_task, "pay").pk])
        in html
    )


def test_step_page_shows_every_attempt(load_template: Any, viewer: User) -> None:
    load_template(
        chain_yaml(
            "flaky",
            1,
            handler="test.flaky",
            default_retry_limit=3,
            handler_config={"fail_times": 2},
        )
    )
    task = run_task_to_completion(create_task("flaky"))
    s0 = step(task, "s0")
    html = client_for(viewer).get(step_url(s0)).content.decode()
    assert StepAttempt.objects.filter(step=s0).count() == 3
    attempts = html[html.index('id="tasker-attempts"') :]
    assert attempts.count("tasker-status-retryable_error") == 2
    assert attempts.count("tasker-status-success") == 1
    assert "flaky attempt 1" in attempts and "flaky attempt 2" in attempts
    assert "RetryableError" in attempts
    assert "test" in attempts  # category
    assert "tasker-retry-step" not in html


def test_step_page_error_code_category_context(failed_task: Task, operator: User) -> None:
    html = client_for(operator).get(step_url(step(failed_task, "pay"))).content.decode()
    attempts = html[html.index('id="tasker-attempts"') :]
    assert "CARD_DECLINED" in attempts and "payment" in attempts
    assert "&quot;step&quot;: &quot;pay&quot;" in attempts  # error context JSON
    assert 'id="tasker-retry-step"' in html and 'id="tasker-resolve-step"' in html
    assert re.search(r"failed after 1 of \d attempts", html)  # waiting reason


def test_status_fields_are_read_only(failed_task: Task, operator: User) -> None:
    client = client_for(operator)
    response = client.post(task_url(failed_task), {"status": "complete"})
    assert response.status_code == 403
    s = step(failed_task, "pay")
    assert client.post(step_url(s), {"status": "complete"}).status_code == 403
    assert Task.objects.get(pk=failed_task.pk).status == TaskStatus.ERROR
    assert client.get(reverse("admin:tasker_django_task_add")).status_code == 403
    assert (
        client.get(reverse("admin:tasker_django_task_delete", args=[failed_task.pk])).status_code
        == 403
    )


def test_dashboard(failed_task: Task, load_template: Any, viewer: User) -> None:
    load_template(chain_yaml("chain", 3))
    run_task_to_completion(create_task("chain"), clock=None)
    url = reverse("admin:tasker_django_dashboard")
    client = client_for(viewer)
    app_index = client.get("/admin/tasker_django/").content.decode()
    assert f'href="{url}"' in app_index
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    assert len(queries) <= 10
    html = response.content.decode()
    tasks = html[
        html.index('id="tasker-tasks-by-status"') : html.index('id="tasker-steps-by-status"')
    ]
    assert '?status__exact=error">1<' in tasks and '?status__exact=complete">1<' in tasks
    assert "Failures in the last hour" in html and "PermanentError" in html
    assert "CARD_DECLINED" in html
    assert "steps completed in the last hour" in html
    assert re.search(r"(\d+) steps completed in the last hour", html).group(1) == "3"
    assert client.get(url).status_code == 200


def test_dashboard_needs_view_permission(db: Any) -> None:
    nobody = User.objects.create_user("nobody", password="pw", is_staff=True)
    assert client_for(nobody).get(reverse("admin:tasker_django_dashboard")).status_code == 403


def test_named_task_page_versions_side_by_side(load_template: Any, viewer: User) -> None:
    load_template(chain_yaml("chain", 2))
    load_template(chain_yaml("chain", 3, default_retry_limit=5).replace("1.0.0", "2.0.0"))
    run_task_to_completion(create_task("chain", version="1.0.0"))
    run_task_to_completion(create_task("chain", version="2.0.0"))
    run_task_to_completion(create_task("chain", version="2.0.0"))
    from tasker_django.models import NamedTask, Namespace

    v2 = NamedTask.objects.get(name="chain", version="2.0.0")
    client = client_for(viewer)
    html = client.get(
        reverse("admin:tasker_django_namedtask_change", args=[v2.pk])
    ).content.decode()
    assert "Versions side by side" in html
    versions = html[html.index('id="tasker-versions"') :]
    assert "1.0.0" in versions and "2.0.0" in versions
    assert "5 attempts" in versions
    assert "<svg" in html and "test.noop" in html
    steps = html[html.index('id="tasker-template-steps"') : html.index('id="tasker-versions"')]
    assert steps.count("<code>test.noop</code>") == 3 and "5 attempts, default backoff" in steps
    listing = client.get(reverse("admin:tasker_django_namedtask_changelist")).content.decode()
    assert ">2</a>" in listing  # two tasks of 2.0.0
    ns = Namespace.objects.get(name="default")
    page = client.get(
        reverse("admin:tasker_django_namespace_change", args=[ns.pk])
    ).content.decode()
    assert "Templates and versions" in page and "2.0.0" in page


def test_history_lists(failed_task: Task, viewer: User) -> None:
    client = client_for(viewer)
    events = client.get(
        reverse("admin:tasker_django_taskevent_changelist") + f"?task__id__exact={failed_task.pk}"
    )
    assert events.status_code == 200 and "task.failed" in events.content.decode()
    attempts = client.get(reverse("admin:tasker_django_stepattempt_changelist"), {"q": "declined"})
    assert "card declined" in attempts.content.decode()
    steps = client.get(
        reverse("admin:tasker_django_workflowstep_changelist"), {"q": str(failed_task.pk)}
    )
    assert steps.content.decode().count("tasker-status-") >= 3


# ---------------------------------------------------------------------------
# Operator actions
# ---------------------------------------------------------------------------


def test_retry_step_asks_then_acts_and_reports(failed_task: Task, operator: User) -> None:
    pay = step(failed_task, "pay")
    url = reverse("admin:tasker_django_workflowstep_retry", args=[pay.pk])
    client = client_for(operator)
    page = client.get(url)
    assert page.status_code == 200
    assert "Retry step pay?" in page.content.decode()
    assert step(failed_task, "pay").status == StepStatus.ERROR  # GET changes nothing
    response = client.post(url, {"reason": "card fixed"}, follow=True)
    assert response.redirect_chain[-1][0] == task_url(failed_task)
    assert "Retried step &#x27;pay&#x27; of task" in response.content.decode()
    assert step(failed_task, "pay").status == StepStatus.ENQUEUED
    event = TaskEvent.objects.get(task=failed_task, name="action.retry_step")
    assert (event.actor, event.reason) == ("operator", "card fixed")


def test_retry_with_downstream(load_template: Any, operator: User) -> None:
    load_template(chain_yaml("chain", 3))
    task = run_task_to_completion(create_task("chain"))
    s0 = step(task, "s0")
    url = reverse("admin:tasker_django_workflowstep_retry", args=[s0.pk])
    client = client_for(operator)
    page = client.get(url + "?downstream=1").content.decode()
    assert 'name="reset_downstream"' in page and "checked" in page
    # without the box a finished step is refused, and the refusal is reported
    response = client.post(url, {"reason": ""}, follow=True)
    assert "only failed, cancelled or backing-off" in response.content.decode()
    assert step(task, "s0").status == StepStatus.COMPLETE
    response = client.post(url, {"reason": "rerun", "reset_downstream": "on"}, follow=True)
    assert "with its downstream steps reset" in response.content.decode()
    assert step(task, "s0").status == StepStatus.ENQUEUED
    assert step(task, "s2").status == StepStatus.PENDING
    assert run_task_to_completion(task).status == TaskStatus.COMPLETE


def test_retry_all_failed_steps_of_a_task(failed_task: Task, operator: User) -> None:
    url = reverse("admin:tasker_django_task_retry_failed", args=[failed_task.pk])
    client = client_for(operator)
    page = client.get(url).content.decode()
    assert "pay (error)" in page
    response = client.post(url, {"reason": ""}, follow=True)
    assert "1 failed step(s) enqueued again" in response.content.decode()
    assert step(failed_task, "pay").status == StepStatus.ENQUEUED
    response = client.post(url, {"reason": ""}, follow=True)
    assert "has no failed steps" in response.content.decode()  # reported, not a crash


def test_resolve_step_with_results(failed_task: Task, operator: User) -> None:
    pay = step(failed_task, "pay")
    url = reverse("admin:tasker_django_workflowstep_resolve", args=[pay.pk])
    client = client_for(operator)
    assert 'name="results"' in client.get(url).content.decode()
    bad = client.post(url, {"results": "[1, 2", "reason": "x"})
    assert bad.status_code == 200 and "Not valid JSON" in bad.content.decode()
    not_object = client.post(url, {"results": "[1, 2]", "reason": "x"})
    assert "must be a JSON object" in not_object.content.decode()
    assert step(failed_task, "pay").status == StepStatus.ERROR
    response = client.post(
        url, {"results": '{"payment_id": "manual-1"}', "reason": "paid by phone"}, follow=True
    )
    assert "Resolved step &#x27;pay&#x27;" in response.content.decode()
    pay = step(failed_task, "pay")
    assert pay.status == StepStatus.RESOLVED_MANUALLY and pay.results == {"payment_id": "manual-1"}
    task = run_task_to_completion(failed_task)
    assert task.status == TaskStatus.COMPLETE
    assert step(task, "notify").results["parents"] == {"pay": {"payment_id": "manual-1"}}


def test_cancel_task_and_step(load_template: Any, operator: User) -> None:
    load_template(chain_yaml("chain", 3))
    task = create_task("chain")
    client = client_for(operator)
    html = client.get(task_url(task)).content.decode()
    assert 'id="tasker-cancel-task"' in html
    s1 = step(task, "s1")
    response = client.post(
        reverse("admin:tasker_django_workflowstep_cancel", args=[s1.pk]),
        {"reason": "no"},
        follow=True,
    )
    assert "Cancelled step" in response.content.decode()
    assert step(task, "s1").status == StepStatus.CANCELLED
    url = reverse("admin:tasker_django_task_cancel", args=[task.pk])
    assert "cannot be undone" in client.get(url).content.decode()
    response = client.post(url, {"reason": "customer left"}, follow=True)
    assert f"Task {task.pk} cancelled." in response.content.decode()
    assert Task.objects.get(pk=task.pk).status == TaskStatus.CANCELLED
    response = client.post(url, {"reason": ""}, follow=True)
    assert "already cancelled" in response.content.decode()


def test_bulk_retry_and_cancel(load_template: Any, operator: User) -> None:
    load_template(FAILING)
    load_template(chain_yaml("chain", 2))
    failed = [run_task_to_completion(create_task("failing", namespace="shop")) for _ in range(3)]
    done = run_task_to_completion(create_task("chain"))
    pending = create_task("chain")
    client = client_for(operator)
    ids = [str(t.pk) for t in (*failed, done)]
    confirm = client.post(CHANGELIST, {"action": "bulk_retry", "_selected_action": ids})
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert "You selected 4 task(s)" in html and "retry the failed steps of 3" in html
    assert all(step(t, "pay").status == StepStatus.ERROR for t in failed)
    response = client.post(
        CHANGELIST,
        {
            "action": "bulk_retry",
            "_selected_action": ids,
            "tasker_confirm": "yes",
            "reason": "bulk",
        },
        follow=True,
    )
    html = response.content.decode()
    assert "Did retry the failed steps of 3 task(s)" in html
    assert "1 selected task(s) skipped" in html
    assert all(step(t, "pay").status == StepStatus.ENQUEUED for t in failed)
    response = client.post(
        CHANGELIST,
        {
            "action": "bulk_cancel",
            "_selected_action": [str(failed[0].pk), str(pending.pk), str(done.pk)],
            "tasker_confirm": "yes",
            "reason": "",
        },
        follow=True,
    )
    assert "Did cancel 2 task(s)" in response.content.decode()
    statuses = dict(Task.objects.values_list("pk", "status"))
    assert statuses[failed[0].pk] == statuses[pending.pk] == TaskStatus.CANCELLED
    assert statuses[done.pk] == TaskStatus.COMPLETE


def test_bulk_action_across_all_filtered_rows(load_template: Any, operator: User) -> None:
    load_template(chain_yaml("chain", 2))
    tasks = [create_task("chain") for _ in range(4)]
    client = client_for(operator)
    response = client.post(
        CHANGELIST + "?status__exact=pending",
        {
            "action": "bulk_cancel",
            "_selected_action": [str(tasks[0].pk)],
            "select_across": "1",
            "tasker_confirm": "yes",
            "reason": "",
        },
        follow=True,
    )
    assert "Did cancel 4 task(s)" in response.content.decode()


def test_view_only_staff_cannot_act(failed_task: Task, viewer: User) -> None:
    client = client_for(viewer)
    pay = step(failed_task, "pay")
    urls = [
        reverse("admin:tasker_django_workflowstep_retry", args=[pay.pk]),
        reverse("admin:tasker_django_workflowstep_resolve", args=[pay.pk]),
        reverse("admin:tasker_django_workflowstep_cancel", args=[pay.pk]),
        reverse("admin:tasker_django_task_retry_failed", args=[failed_task.pk]),
        reverse("admin:tasker_django_task_cancel", args=[failed_task.pk]),
    ]
    for url in urls:
        assert client.get(url).status_code == 403, url
        assert client.post(url, {"reason": "x", "results": "{}"}).status_code == 403, url
    html = client.get(step_url(pay)).content.decode()
    assert "tasker-retry-step" not in html and "tasker-resolve-step" not in html
    response = client.post(
        CHANGELIST,
        {
            "action": "bulk_cancel",
            "_selected_action": [str(failed_task.pk)],
            "tasker_confirm": "yes",
        },
        follow=True,
    )
    assert response.status_code == 200
    assert Task.objects.get(pk=failed_task.pk).status == TaskStatus.ERROR
    assert not TaskEvent.objects.filter(kind=TaskEvent.Kind.ACTION).exists()


def test_each_permission_allows_only_its_action(failed_task: Task, viewer: User) -> None:
    viewer.user_permissions.add(Permission.objects.get(codename="resolve_step"))
    client = client_for(User.objects.get(pk=viewer.pk))
    pay = step(failed_task, "pay")
    assert (
        client.get(reverse("admin:tasker_django_workflowstep_resolve", args=[pay.pk])).status_code
        == 200
    )
    assert (
        client.get(reverse("admin:tasker_django_workflowstep_retry", args=[pay.pk])).status_code
        == 403
    )
    assert (
        client.get(reverse("admin:tasker_django_task_cancel", args=[failed_task.pk])).status_code
        == 403
    )
    html = client.get(step_url(pay)).content.decode()
    assert 'id="tasker-resolve-step"' in html and 'id="tasker-retry-step"' not in html


def test_anonymous_is_sent_to_login(failed_task: Task) -> None:
    pay = step(failed_task, "pay")
    response = Client().post(reverse("admin:tasker_django_workflowstep_retry", args=[pay.pk]))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert step(failed_task, "pay").status == StepStatus.ERROR


# ---------------------------------------------------------------------------
# Query counts and escaping
# ---------------------------------------------------------------------------


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


def _failed_chain(load_template: Any, name: str, n: int) -> Task:
    load_template(chain_yaml(name, n))
    task = create_task(name)
    steps = WorkflowStep.objects.filter(task=task)
    steps.filter(position__lt=n // 2).update(status=StepStatus.COMPLETE, results={"ok": True})
    steps.filter(position=n // 2).update(
        status=StepStatus.ERROR, attempts=1, last_error={"error_class": "E", "message": "m"}
    )
    Task.objects.filter(pk=task.pk).update(status=TaskStatus.ERROR, completed_steps=n // 2)
    return task


def test_task_page_queries_do_not_grow_with_step_count(load_template: Any, operator: User) -> None:
    small = _failed_chain(load_template, "small", 10)
    big = _failed_chain(load_template, "big", 1000)
    client = client_for(operator)
    _queries(client, task_url(small))  # warm caches (content types, session)
    small_count = _queries(client, task_url(small))
    big_count = _queries(client, task_url(big))
    assert big_count == small_count, (small_count, big_count)
    assert small_count <= 15
    html = client.get(task_url(big)).content.decode()
    svg = graph_svg(html)
    assert svg.count("<rect") == 1000
    width = int(re.search(r'<svg [^>]*width="(\d+)"', svg).group(1))
    assert width > 1000 * 150  # natural size: a long chain scrolls instead of shrinking
    assert 'class="tasker-graph-scroll"' in html
    big_step = WorkflowStep.objects.filter(task=big).first()
    assert _queries(client, step_url(big_step)) <= 15
    from tasker_django.models import NamedTask

    nt_url = reverse(
        "admin:tasker_django_namedtask_change", args=[NamedTask.objects.get(name="big").pk]
    )
    small_nt = reverse(
        "admin:tasker_django_namedtask_change", args=[NamedTask.objects.get(name="small").pk]
    )
    _queries(client, small_nt)  # warm the content type cache of NamedTask
    assert _queries(client, nt_url) == _queries(client, small_nt)


def test_lists_queries_do_not_grow_with_rows(load_template: Any, viewer: User) -> None:
    load_template(FAILING)
    client = client_for(viewer)
    lists = [
        CHANGELIST,
        reverse("admin:tasker_django_workflowstep_changelist"),
        reverse("admin:tasker_django_stepattempt_changelist"),
        reverse("admin:tasker_django_taskevent_changelist"),
        reverse("admin:tasker_django_namedtask_changelist"),
        reverse("admin:tasker_django_namespace_changelist"),
    ]
    run_task_to_completion(create_task("failing", namespace="shop"))
    _queries(client, CHANGELIST)
    before = {url: _queries(client, url) for url in lists}
    for _ in range(4):
        run_task_to_completion(create_task("failing", namespace="shop"))
    load_template(chain_yaml("other", 2))
    after = {url: _queries(client, url) for url in lists}
    assert after == before
    assert max(after.values()) <= 10


XSS = ("<script>alert(1)</script>", '"><svg onload=alert(1)>')


def _assert_escaped(html: str) -> None:
    for raw in XSS:
        assert raw not in html
    assert "<svg onload" not in html
    assert "<script>alert" not in html


def test_user_strings_are_escaped_everywhere(failed_task: Task, operator: User) -> None:
    payload = " ".join(XSS)
    Task.objects.filter(pk=failed_task.pk).update(
        context={"note": payload, payload: 1}, tags=[payload], initiator=payload, reason=payload
    )
    pay = step(failed_task, "pay")
    WorkflowStep.objects.filter(pk=pay.pk).update(
        name=f"pay {XSS[1]}",
        last_error={"error_class": XSS[0], "message": payload},
        results={"html": payload},
    )
    StepAttempt.objects.filter(step=pay).update(
        error_message=payload, error_class=XSS[0], error_code=XSS[1], error_context={"x": payload}
    )
    WorkflowStep.objects.filter(task=failed_task, name="notify").update(results={payload: payload})
    TaskEvent.objects.create(
        task=failed_task,
        step=pay,
        name="note",
        actor=payload,
        reason=payload,
        payload={"p": payload},
    )
    client = client_for(operator)
    pages = {
        "task": task_url(failed_task),
        "step": step_url(pay),
        "changelist": CHANGELIST,
        "search": CHANGELIST + "?q=svg",
        "dashboard": reverse("admin:tasker_django_dashboard"),
        "retry": reverse("admin:tasker_django_workflowstep_retry", args=[pay.pk]),
        "resolve": reverse("admin:tasker_django_workflowstep_resolve", args=[pay.pk]),
        "events": reverse("admin:tasker_django_taskevent_changelist"),
        "attempts": reverse("admin:tasker_django_stepattempt_changelist"),
        "steps": reverse("admin:tasker_django_workflowstep_changelist"),
    }
    for name, url in pages.items():
        response = client.get(url)
        assert response.status_code == 200, name
        html = response.content.decode()
        _assert_escaped(html)
        if name in ("task", "step", "changelist", "dashboard"):
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, name  # shown, as text
    html = client.get(task_url(failed_task)).content.decode()
    svg = graph_svg(html)
    root = ET.fromstring(svg)  # the escaped label keeps the SVG well-formed
    assert len(root.findall(".//{http://www.w3.org/2000/svg}script")) == 0
    names = [el.text for el in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any(t and t.startswith('pay "><svg') for t in names)


def test_bar_chart_is_escaped_and_well_formed() -> None:
    svg = render_bar_chart([(XSS[1], 3), ("12:01", 0), ("12:02", 7)], title=XSS[0])
    ET.fromstring(svg)
    _assert_escaped(svg)
    assert svg.count("<rect") == 2


def test_dashboard_throughput_counts_by_minute(failed_task: Task, viewer: User) -> None:
    from tasker_django.admin.tasks import dashboard_context

    now = timezone.now()
    pay = step(failed_task, "pay")
    for i, minutes_ago in enumerate((1, 1, 2, 90)):
        StepAttempt.objects.create(
            step=pay,
            task=failed_task,
            attempt_number=10 + i,
            outcome="success",
            finished_at=now - timedelta(minutes=minutes_ago),
        )
    context = dashboard_context(now)
    assert context["throughput_total"] == 3
