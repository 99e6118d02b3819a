"""End to end over real HTTP: a live server, real worker processes, and the curl example
of docs/api.md (and of the README, when it has one) run by the real ``curl`` binary."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tasker_django.models import Task, TaskStatus
from tests.api_support import basic, make_user
from tests.conftest import EXAMPLE_TEMPLATES, Workers

pytest_plugins = ["tests.api_fixtures"]

pytestmark = [
    pytest.mark.workers,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("api_fast_hasher"),
]

ROOT = Path(__file__).resolve().parents[1]
CURL_FENCE = re.compile(r"^```sh curl-test\n(.*?)^```$", re.MULTILINE | re.DOTALL)
DOC_BASE = "http://127.0.0.1:8000"


def curl_blocks(path: Path) -> list[list[str]]:
    """The commands of each ```sh curl-test block: continuations joined, comments dropped."""
    blocks = []
    for body in CURL_FENCE.findall(path.read_text()):
        text = body.replace("\\\n", " ")
        blocks.append([line.strip() for line in text.splitlines() if line.strip()[:4] == "curl"])
    return blocks


def run_curl(command: str, base: str, task_id: int | None = None) -> Any:
    command = command.replace(DOC_BASE, base)
    if task_id is not None:
        command = command.replace("/tasker/tasks/1/", f"/tasker/tasks/{task_id}/")
    args = shlex.split(command)
    assert args[0] == "curl"
    # -w appends the status code on its own line after the body.
    result = subprocess.run(
        [*args, "-w", "\n%{http_code}"], capture_output=True, text=True, timeout=30, check=True
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body)


def wait_until(predicate: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not done within {timeout} s")


def test_docs_curl_example_against_a_live_server_and_workers(
    live_server: Any, workers: Workers, load_template: Any
) -> None:
    load_template((EXAMPLE_TEMPLATES / "payments/linear_payment/1.0.0.yaml").read_text())
    make_user("admin", password="admin", is_superuser=True)  # the docs' credentials
    (docs,) = curl_blocks(ROOT / "docs" / "api.md")
    readme = curl_blocks(ROOT / "README.md")
    assert all(block == docs for block in readme), "README's curl example differs from docs/api.md"
    create, read = docs
    workers.start(1)

    status, task = run_curl(create, live_server.url)
    assert status == 201, task
    assert (task["namespace"], task["name"], task["initiator"]) == (
        "payments",
        "linear_payment",
        "admin",
    )
    status, again = run_curl(create, live_server.url)  # same idempotency key
    assert (status, again["id"]) == (200, task["id"])

    def finished() -> Any:
        status, data = run_curl(read, live_server.url, task["id"])
        assert status == 200, data
        return data if data["status"] not in ("pending", "in_progress") else None

    data = wait_until(finished)
    assert data["status"] == TaskStatus.COMPLETE, workers.output()[-3000:]
    assert data["progress"] == 1.0 and data["completed_steps"] == 5
    assert [s["status"] for s in data["steps"]] == ["complete"] * 5
    assert data["steps"][0]["results"]  # the handlers' results, read over HTTP
    assert Task.objects.count() == 1


def test_workflow_over_http_with_real_workers(
    live_server: Any, workers: Workers, load_template: Any
) -> None:
    """Start a fan-out workflow, let two workers run it, read the results and events."""
    load_template((EXAMPLE_TEMPLATES / "payments/payment_fanout/1.0.0.yaml").read_text())
    make_user("service", ["add_task", "view_task"])
    auth = {"Authorization": basic("service"), "Content-Type": "application/json"}

    def call(path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{live_server.url}/tasker/{path}", data, auth)
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())

    workers.start(2)
    status, task = call(
        "tasks/",
        {
            "namespace": "payments",
            "name": "payment_fanout",
            "context": {"amount": 20, "currency": "EUR", "customer_id": 7},
            "tags": ["e2e"],
        },
    )
    assert status == 201 and task["total_steps"] == 3

    def done() -> Any:
        data = call(f"tasks/{task['id']}/")[1]
        return data if data["status"] not in ("pending", "in_progress") else None

    data = wait_until(done)
    assert data["status"] == TaskStatus.COMPLETE, workers.output()[-3000:]
    steps = {s["name"]: s for s in data["steps"]}
    assert set(steps) == {"payment_processing", "payment_notification", "audit_log"}
    assert all(s["status"] == "complete" and s["results"] for s in steps.values())
    events = call(f"tasks/{task['id']}/events/?name=task.completed")[1]
    assert events["count"] == 1
    listed = call("tasks/?tag=e2e&status=complete")[1]
    assert [t["id"] for t in listed["results"]] == [task["id"]]
