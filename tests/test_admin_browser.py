"""The admin in a real browser: Playwright drives Debian's Chromium against a live server
and real ``tasker_worker`` processes.

Skipped only when ``/usr/bin/chromium`` is missing (``apt-get install -y chromium``);
Playwright's own browser download is not used. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from tasker_django import create_task
from tasker_django.models import StepStatus, Task, TaskEvent, TaskStatus, WorkflowStep
from tasker_django.testing import run_task_to_completion

from .conftest import ROOT, Workers, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.workers,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]

CHECKOUT = """
name: checkout
namespace: shop
version: "1.0.0"
description: "Validate and screen an order, charge the card (flaky), then ship and notify."
step_templates:
  - {name: validate_order, handler_class: test.noop}
  - {name: fraud_screen, handler_class: test.noop}
  - name: charge_card
    handler_class: test.flaky
    depends_on_steps: [validate_order, fraud_screen]
    default_retry_limit: 1
    handler_config: {fail_times: 1}
  - {name: reserve_stock, handler_class: test.noop, depends_on_step: validate_order}
  - name: ship_order
    handler_class: test.noop
    depends_on_steps: [charge_card, reserve_stock]
  - {name: send_receipt, handler_class: test.noop, depends_on_step: charge_card}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running on this thread for as long as
    # the browser lives, so Django would refuse the ORM calls the tests (and the
    # database teardown) make between browser steps, which are plain synchronous code.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


def make_user(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="s3cret-pass", is_staff=True)
    perms = Permission.objects.filter(content_type__app_label="tasker_django")
    user.user_permissions.add(
        *perms.filter(codename__startswith="view_"), *perms.filter(codename__in=codenames)
    )
    return user


def log_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/tasker_django/task/")
    page.fill("#id_username", username)
    page.fill("#id_password", "s3cret-pass")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/tasker_django/task/")


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"admin-{name}.png"), full_page=True)


def test_operator_finds_failed_task_retries_step_and_watches_it_complete(
    live_server: Any, workers: Workers, load_template: Any, page: Any
) -> None:
    load_template(CHECKOUT)
    make_user("operator", "retry_step", "resolve_step", "cancel_step", "cancel_task")
    workers.start(1)
    task = create_task(
        "checkout",
        namespace="shop",
        context={"order_id": 1001, "customer": "ada@example.com"},
        tags=["vip"],
        initiator="web-shop",
    )
    wait_for(lambda: Task.objects.get(pk=task.pk).status == TaskStatus.ERROR, timeout=60)
    base = live_server.url

    log_in(page, base, "operator")
    page.click("#changelist-filter a:text-is('error')")
    page.wait_for_url(lambda url: "status__exact=error" in url)
    row = page.locator("#result_list tbody tr", has_text="shop/checkout@1.0.0")
    assert row.count() == 1
    assert "flaky attempt 1" in row.locator(".tasker-error").inner_text()
    assert row.locator(".tasker-badge").inner_text() == "error"
    shot(page, "1-task-list-failed")

    row.locator(f"a[href*='/task/{task.pk}/change/']").click()
    page.wait_for_url(lambda url: f"/task/{task.pk}/change/" in url)
    step_row = page.locator("tr[data-step='charge_card']")
    error = step_row.locator(".tasker-error").inner_text()
    assert "RetryableError: flaky attempt 1" in error
    assert page.locator("#tasker-graph svg a").count() == 6  # every node links to its step
    assert page.locator("#tasker-graph [data-status='error']").count() == 1
    assert (
        "blocked: parent failed: charge_card"
        in page.locator("tr[data-step='send_receipt']").inner_text()
    )
    shot(page, "2-task-page-failed")

    step_row.locator("a.tasker-retry-step").click()
    page.wait_for_selector("#tasker-confirm-form")
    assert "Retry step charge_card?" in page.content()
    page.fill("#id_reason", "card issuer was down; retrying")
    shot(page, "3-retry-confirmation")
    page.click("#tasker-confirm")
    page.wait_for_url(lambda url: f"/task/{task.pk}/change/" in url)
    assert "Retried step 'charge_card'" in page.locator("ul.messagelist").inner_text()

    deadline = time.monotonic() + 60
    while page.locator("#tasker-task-status").inner_text() != "complete":
        assert time.monotonic() < deadline, "the task did not complete within 60 s"
        time.sleep(0.5)
        page.reload()
    assert page.locator("#tasker-graph [data-status='complete']").count() == 6
    assert "card issuer was down" in page.locator("#tasker-timeline").inner_text()
    shot(page, "4-task-page-complete")

    page.click("tr[data-step='charge_card'] td:nth-child(2) a")
    page.wait_for_selector("#tasker-attempts")
    attempts = page.locator("#tasker-attempts tbody tr")
    assert attempts.count() == 2
    assert "flaky attempt 1" in attempts.nth(0).inner_text()
    assert "success" in attempts.nth(1).inner_text()
    shot(page, "5-step-page-attempts")

    page.goto(base + reverse("admin:tasker_django_dashboard"))
    assert "Failures in the last hour" in page.content()
    shot(page, "6-dashboard")
    named = task.named_task_id
    page.goto(base + reverse("admin:tasker_django_namedtask_change", args=[named]))
    assert page.locator("#tasker-graph svg").count() == 1
    shot(page, "7-template-page")

    event = TaskEvent.objects.get(task=task, name="action.retry_step")
    assert (event.actor, event.reason) == ("operator", "card issuer was down; retrying")
    assert WorkflowStep.objects.get(task=task, name="charge_card").attempts == 2


def test_view_only_staff_sees_no_actions_and_gets_403(
    live_server: Any, load_template: Any, page: Any
) -> None:
    load_template(CHECKOUT)
    make_user("viewer")
    task = run_task_to_completion(create_task("checkout", namespace="shop"))
    assert task.status == TaskStatus.ERROR
    charge = WorkflowStep.objects.get(task=task, name="charge_card")
    base = live_server.url

    log_in(page, base, "viewer")
    assert page.locator("select[name=action]").count() == 0  # no bulk actions
    page.goto(base + reverse("admin:tasker_django_task_change", args=[task.pk]))
    assert "flaky attempt 1" in page.locator("tr[data-step='charge_card']").inner_text()
    for selector in ("#tasker-retry-failed", "#tasker-cancel-task", "a.tasker-retry-step"):
        assert page.locator(selector).count() == 0, selector
    shot(page, "8-view-only-task-page")
    page.goto(base + reverse("admin:tasker_django_workflowstep_change", args=[charge.pk]))
    for selector in ("#tasker-retry-step", "#tasker-resolve-step", "#tasker-cancel-step"):
        assert page.locator(selector).count() == 0, selector

    retry_url = base + reverse("admin:tasker_django_workflowstep_retry", args=[charge.pk])
    assert page.goto(retry_url).status == 403
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    for url in (
        retry_url,
        base + reverse("admin:tasker_django_workflowstep_resolve", args=[charge.pk]),
        base + reverse("admin:tasker_django_task_cancel", args=[task.pk]),
        base + reverse("admin:tasker_django_task_retry_failed", args=[task.pk]),
    ):
        response = page.request.post(
            url,
            form={"reason": "sneaky", "results": "{}"},
            headers={"X-CSRFToken": token, "Referer": base + "/admin/"},
        )
        assert response.status == 403, url
        assert "CSRF" not in response.text()  # refused for the permission, not the token
    assert WorkflowStep.objects.get(pk=charge.pk).status == StepStatus.ERROR
    assert Task.objects.get(pk=task.pk).status == TaskStatus.ERROR
    assert not TaskEvent.objects.filter(task=task, kind=TaskEvent.Kind.ACTION).exists()
