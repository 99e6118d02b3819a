"""The task list with 100,000 tasks: a bounded number of queries on either database.

Rows are bulk-inserted (one ``INSERT ... SELECT``), not run. The assertion is on query
counts (no per-row queries whatever the filter, search or page), not on time; the time
is printed (``pytest -s``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tasker_django.models import (
    NamedTask,
    StepAttempt,
    StepStatus,
    Task,
    TaskStatus,
    WorkflowStep,
)

from .conftest import chain_yaml, is_postgres

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

CHANGELIST = "/admin/tasker_django/task/"


def bulk_tasks(named: list[NamedTask], n: int) -> None:
    """Insert ``n`` tasks with one ``INSERT ... SELECT`` over a generated series.

    Building 100,000 model instances for ``bulk_create`` costs half a minute of
    Python on a busy CI machine; the database generates the rows in a second.
    Per row: statuses cycle (7 complete, 1 error, 1 in progress, 1 pending in 10),
    templates alternate, context/tags/initiator vary, ``created_at`` is one second
    apart. Columns not set here get their model default (so a new column with a
    default does not break this).
    """
    postgres = is_postgres()
    i = "seq.i"
    mod = lambda k: f"({i} %% {k})"  # noqa: E731 - ``%`` is the parameter marker
    cat = " || "
    status = (
        f"CASE WHEN {mod(10)} < 7 THEN 'complete' WHEN {mod(10)} = 7 THEN 'error' "
        f"WHEN {mod(10)} = 8 THEN 'in_progress' ELSE 'pending' END"
    )
    finished = f"{mod(10)} < 8"
    if postgres:
        prefix = ""
        source = "generate_series(1, %s) AS seq(i)"
        obj, arr = "jsonb_build_object", "jsonb_build_array"
        created = f"(%s::timestamptz - (%s - {i}) * interval '1 second')"
        plus_two = f"({created} + interval '2 seconds')"
    else:
        prefix = "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %s) "
        source = "seq"
        obj, arr = "json_object", "json_array"
        created = f"strftime('%%Y-%%m-%%d %%H:%%M:%%f', %s, '-' || (%s - {i}) || ' seconds')"
        plus_two = f"strftime('%%Y-%%m-%%d %%H:%%M:%%f', {created}, '+2 seconds')"
    now = timezone.now()
    now_param: Any = now if postgres else now.strftime("%Y-%m-%d %H:%M:%S.%f")
    ids = [t.pk for t in named]
    template = (
        "CASE "
        + " ".join(f"WHEN {mod(len(ids))} = {k} THEN {pk}" for k, pk in enumerate(ids))
        + " END"
    )
    expressions: dict[str, tuple[str, list[Any]]] = {
        "named_task_id": (template, []),
        "status": (status, []),
        "context": (
            f"{obj}('order_id', {i}, 'customer', 'customer-'{cat}{mod(997)}{cat}'@example.com')",
            [],
        ),
        "tags": (f"{arr}('batch-'{cat}{mod(50)})", []),
        "initiator": (f"'service-'{cat}{mod(7)}", []),
        "total_steps": ("3", []),
        "completed_steps": (f"CASE WHEN {mod(10)} < 7 THEN 3 ELSE 1 END", []),
        "failed_steps": (f"CASE WHEN {mod(10)} = 7 THEN 1 ELSE 0 END", []),
        "created_at": (created, [now_param, n]),
        "started_at": (created, [now_param, n]),
        "completed_at": (f"CASE WHEN {finished} THEN {plus_two} END", [now_param, n]),
    }
    columns, selects, params = [], [], []
    for field in Task._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(connection.ops.quote_name(field.column))
        if field.column in expressions:
            sql, extra = expressions[field.column]
            selects.append(sql)
            params.extend(extra)
        else:
            selects.append("%s")
            params.append(field.get_db_prep_save(field.get_default(), connection))
    sql = (
        f"{prefix}INSERT INTO {Task._meta.db_table} ({', '.join(columns)}) "
        f"SELECT {', '.join(selects)} FROM {source}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [n, *params] if not postgres else [*params, n])


def failed_attempts_on_newest(named: NamedTask, count: int) -> None:
    """A failed step with an attempt on the newest ``count`` failed tasks (the first page)."""
    named_step = named.named_steps.order_by("position").first()
    assert named_step is not None
    tasks = list(Task.objects.filter(status=TaskStatus.ERROR).order_by("-created_at")[:count])
    steps = WorkflowStep.objects.bulk_create(
        [
            WorkflowStep(
                task=t,
                named_step=named_step,
                name=f"{named_step.name}",
                status=StepStatus.ERROR,
                attempts=1,
                last_error={"error_class": "Boom", "message": f"declined {t.pk}"},
            )
            for t in tasks
        ]
    )
    StepAttempt.objects.bulk_create(
        [
            StepAttempt(
                step=s,
                task_id=s.task_id,
                attempt_number=1,
                outcome="permanent_error",
                error_class="tasks.Boom",
                error_message=f"declined {s.task_id}",
            )
            for s in steps
        ]
    )


def count_queries(client: Client, url: str) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(captured), response.content.decode()


def test_task_list_with_100k_tasks(load_template: Any) -> None:
    n = 100_000
    named = [
        load_template(chain_yaml("orders", 3)),
        load_template(chain_yaml("refunds", 3)),
        load_template(chain_yaml("orders", 3).replace("1.0.0", "2.0.0")),
    ]
    started = time.monotonic()
    bulk_tasks(named, n)
    failed_attempts_on_newest(named[0], 200)
    inserted = time.monotonic() - started
    assert Task.objects.count() == n

    user = User.objects.create_superuser("admin", password="pw")
    client = Client()
    client.force_login(user)
    newest = Task.objects.order_by("-created_at", "-id").first()
    assert newest is not None
    urls = {
        "plain": CHANGELIST,
        "page 50": CHANGELIST + "?p=50",
        "status": CHANGELIST + "?status__exact=error",
        "namespace": CHANGELIST + "?namespace=default",
        "template+version": CHANGELIST + "?template=default/orders&version=2.0.0",
        "sorted by failed": CHANGELIST + "?o=-7",
        "search id": CHANGELIST + f"?q={newest.pk}",
        "search tag": CHANGELIST + "?q=batch-7",
        "search initiator": CHANGELIST + "?q=service-3",
        "search context": CHANGELIST + "?q=customer-5%40example",
        "search two words": CHANGELIST + "?q=batch-7+service-3",
    }
    count_queries(client, CHANGELIST)  # warm the session and content types
    timings = {}
    counts = {}
    for name, url in urls.items():
        t0 = time.monotonic()
        counts[name], html = count_queries(client, url)
        timings[name] = round(time.monotonic() - t0, 3)
        assert counts[name] <= 10, (name, counts[name])
        if name in ("plain", "page 50", "status"):
            assert html.count('class="action-select"') == 50, name  # a full page of rows
    # The page of newest failed tasks shows their errors from the annotation.
    _, html = count_queries(client, CHANGELIST + "?status__exact=error")
    assert "Boom: declined" in html
    print(f"\n{n} tasks inserted in {inserted:.1f} s; queries {counts}; seconds {timings}")
