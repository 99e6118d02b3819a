"""Creating tasks: validation, idempotency, pinning, bulk creation in constant queries."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tasker_django import TaskValidationError, TemplateNotFound, create_task
from tasker_django.models import StepStatus, Task, WorkflowStep, WorkflowStepEdge

from .conftest import SEED_DIR, chain_yaml

pytestmark = pytest.mark.django_db


def wide_yaml(name: str, n: int) -> str:
    """``n`` steps: a root, n-2 middle steps that depend on it, a join of them all."""
    steps: list[dict[str, Any]] = [{"name": "root", "handler_class": "test.noop"}]
    steps += [
        {"name": f"m{i}", "handler_class": "test.noop", "depends_on_step": "root"}
        for i in range(n - 2)
    ]
    steps.append(
        {
            "name": "join",
            "handler_class": "test.noop",
            "depends_on_steps": [f"m{i}" for i in range(n - 2)],
        }
    )
    return yaml.safe_dump({"name": name, "version": "1.0.0", "step_templates": steps})


def test_create_task_builds_steps_and_edges(load_template: Any) -> None:
    load_template(wide_yaml("wide", 6))
    task = create_task("wide", context={"a": 1}, tags=["x"], initiator="me", priority=3)
    assert task.total_steps == 6
    assert WorkflowStep.objects.filter(task=task).count() == 6
    assert WorkflowStepEdge.objects.filter(task=task).count() == 4 + 4
    root = WorkflowStep.objects.get(task=task, name="root")
    join = WorkflowStep.objects.get(task=task, name="join")
    assert root.status == StepStatus.ENQUEUED and root.enqueued_at is not None
    assert join.status == StepStatus.PENDING and join.remaining_parents == 4
    assert (task.initiator, task.priority, task.tags) == ("me", 3, ["x"])


@pytest.mark.parametrize("n", [10, 1000])
def test_creation_query_count_is_constant(load_template: Any, n: int) -> None:
    load_template(wide_yaml(f"wide{n}", n))
    with CaptureQueriesContext(connection) as ctx:
        task = create_task(f"wide{n}")
    assert WorkflowStep.objects.filter(task=task).count() == n
    assert WorkflowStepEdge.objects.filter(task=task).count() == 2 * (n - 2)
    # template lookup, idempotency-free insert of task, steps, edges, roots, event, kick
    assert len(ctx.captured_queries) <= 10, [q["sql"][:80] for q in ctx.captured_queries]


def test_creation_query_count_same_for_both_sizes(load_template: Any) -> None:
    counts = []
    for n in (10, 1000):
        load_template(wide_yaml(f"same{n}", n))
        with CaptureQueriesContext(connection) as ctx:
            create_task(f"same{n}")
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1]


def test_context_validated_against_schema_with_paths() -> None:
    from django.core.management import call_command

    call_command("tasker_load_templates", str(SEED_DIR / "credit_card_payment.yaml"), verbosity=0)
    with pytest.raises(TaskValidationError) as info:
        create_task(
            "payment_processing/credit_card_payment",
            namespace="payments",
            context={"order_id": 0, "payment_info": {"amount": 5, "currency": "JPY"}},
        )
    paths = {e["path"] for e in info.value.errors}
    assert paths == {"$", "$.order_id", "$.payment_info", "$.payment_info.currency"}
    assert "customer_id" in str(info.value)
    assert not Task.objects.exists()


def test_context_must_be_an_object(load_template: Any) -> None:
    load_template(chain_yaml("c1", 1))
    with pytest.raises(TaskValidationError):
        create_task("c1", context=["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(TaskValidationError):
        create_task("c1", context={"x": {1, 2}})


def test_idempotency_key_returns_existing_task(load_template: Any) -> None:
    load_template(chain_yaml("idem", 2))
    first = create_task("idem", idempotency_key="order-1")
    again = create_task("idem", idempotency_key="order-1")
    other = create_task("idem", idempotency_key="order-2")
    assert first.pk == again.pk != other.pk
    assert Task.objects.count() == 2


def test_unknown_template_is_a_clear_error(load_template: Any) -> None:
    load_template(chain_yaml("known", 1))
    with pytest.raises(TemplateNotFound, match="Load it with"):
        create_task("unknown")
    with pytest.raises(TemplateNotFound, match="Loaded versions: 1.0.0"):
        create_task("known", version="9.9.9")


def test_latest_version_by_semver_and_pinning(load_template: Any) -> None:
    for version in ("1.9.0", "1.10.0", "1.2.0"):
        load_template(chain_yaml("ver", 1).replace("1.0.0", version))
    task = create_task("ver")
    assert task.named_task.version == "1.10.0"
    pinned = task.named_task_id
    load_template(chain_yaml("ver", 2).replace("1.0.0", "1.10.0"), force=True)
    task.refresh_from_db()
    assert task.named_task_id == pinned  # existing task keeps its definition
    assert WorkflowStep.objects.filter(task=task).count() == 1
    assert create_task("ver").total_steps == 2


def test_template_dirs_lookup(tmp_path: Any, settings: Any, db: Any) -> None:
    folder = tmp_path / "default" / "from_disk"
    folder.mkdir(parents=True)
    for version in ("1.0.0", "2.0.0"):
        (folder / f"{version}.yaml").write_text(
            chain_yaml("from_disk", 1).replace("1.0.0", version)
        )
    settings.TASKER = {**settings.TASKER, "TEMPLATE_DIRS": [str(tmp_path)]}
    task = create_task("from_disk")
    assert task.named_task.version == "2.0.0"
    assert create_task("from_disk", version="1.0.0").named_task.version == "1.0.0"


@pytest.mark.parametrize(
    ("namespace", "name", "version"),
    [("..", "secret", None), ("default", "../../etc", None), ("default", "x", "../1.0.0")],
)
def test_template_dirs_lookup_stays_inside_the_directory(
    tmp_path: Any, settings: Any, db: Any, namespace: str, name: str, version: str | None
) -> None:
    inside = tmp_path / "templates"
    inside.mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "1.0.0.yaml").write_text(chain_yaml("secret", 1))
    settings.TASKER = {**settings.TASKER, "TEMPLATE_DIRS": [str(inside)]}
    with pytest.raises(TemplateNotFound):
        create_task(name, namespace=namespace, version=version)
