"""``tasker_django.testing``: factories, helpers, FakeClock, run_task_to_completion, plugin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tasker_django import create_task
from tasker_django.handlers.base import StepHandler
from tasker_django.handlers.registry import registry
from tasker_django.models import (
    NamedStep,
    NamedTask,
    Namespace,
    StepAttempt,
    StepStatus,
    Task,
    TaskStatus,
    WorkflowStep,
)
from tasker_django.services.inspect import step_states
from tasker_django.testing import (
    FakeClock,
    Foundation,
    NamedStepFactory,
    NamedTaskFactory,
    NamespaceFactory,
    TaskFactory,
    WorkflowStepFactory,
    create_test_foundation,
    create_test_task,
    create_test_workflow_step,
    load_test_template,
    run_task_to_completion,
)

from .conftest import chain_yaml

pytestmark = pytest.mark.django_db

PLUGIN_HANDLER = "test.plugin_fixture_only"


# -- factories -------------------------------------------------------------------------------


def test_factories_build_a_consistent_graph() -> None:
    step = WorkflowStepFactory.create()
    assert step.status == StepStatus.PENDING and step.attempts == 0
    assert step.named_step.named_task_id == step.task.named_task_id
    assert step.name == step.named_step.name
    assert step.named_step.handler_class == "tasker.noop"
    assert step.task.status == TaskStatus.PENDING
    assert step.task.context == {} and step.task.tags == []
    named = step.task.named_task
    assert named.is_current and named.version == "1.0.0" and named.revision == 1
    assert named.template["namespace"] == named.namespace.name
    assert named.template["name"] == named.name
    assert len(named.content_hash) == 64


def test_namespace_factory_is_get_or_create() -> None:
    assert NamespaceFactory.create(name="ns").pk == NamespaceFactory.create(name="ns").pk
    assert Namespace.objects.filter(name="ns").count() == 1
    assert NamespaceFactory.create().name != NamespaceFactory.create().name


def test_named_task_and_step_factories() -> None:
    named_task = NamedTaskFactory.create(name="orders", version="2.0.0")
    step = NamedStepFactory.create(named_task=named_task, name="charge", max_attempts=5)
    assert str(named_task) == f"{named_task.namespace.name}/orders@2.0.0"
    assert list(named_task.named_steps.all()) == [step]
    assert step.max_attempts == 5


@pytest.mark.parametrize(
    ("trait", "status", "started", "completed"),
    [
        ("in_progress", TaskStatus.IN_PROGRESS, True, False),
        ("complete", TaskStatus.COMPLETE, True, True),
        ("error", TaskStatus.ERROR, True, True),
        ("cancelled", TaskStatus.CANCELLED, False, True),
    ],
)
def test_task_factory_traits(trait: str, status: str, started: bool, completed: bool) -> None:
    task = TaskFactory.create(**{trait: True})
    task.refresh_from_db()
    assert task.status == status
    assert (task.started_at is not None) is started
    assert (task.completed_at is not None) is completed


def test_task_factory_default_has_no_timestamps() -> None:
    task = TaskFactory.create()
    assert task.status == TaskStatus.PENDING
    assert task.started_at is None and task.completed_at is None


def test_workflow_step_factory_traits() -> None:
    task = TaskFactory.create(in_progress=True)
    enqueued = WorkflowStepFactory.create(task=task, enqueued=True)
    running = WorkflowStepFactory.create(task=task, in_progress=True)
    done = WorkflowStepFactory.create(task=task, complete=True)
    failed = WorkflowStepFactory.create(task=task, error=True)
    backing_off = WorkflowStepFactory.create(task=task, waiting_for_retry=True)

    assert enqueued.status == StepStatus.ENQUEUED and enqueued.enqueued_at is not None
    assert running.status == StepStatus.IN_PROGRESS
    assert running.attempts == 1 and running.worker_id == "test-worker"
    assert running.claimed_at is not None and running.started_at is not None
    assert done.status == StepStatus.COMPLETE and done.results == {"ok": True}
    assert done.completed_at is not None and done.attempts == 1
    assert failed.status == StepStatus.ERROR and failed.attempts == 3
    assert failed.last_error == {"error_class": "RuntimeError", "message": "boom"}
    assert backing_off.status == StepStatus.WAITING_FOR_RETRY
    assert backing_off.attempts == 1 and backing_off.next_attempt_at is not None

    # The rows read back the same, and the inspector explains each state.
    reasons = {s.name: s.reason for s in step_states(task)}
    assert "waiting for a worker" in reasons[enqueued.name]
    assert "running on worker test-worker" in reasons[running.name]
    assert reasons[done.name] == ""
    assert reasons[failed.name] == "failed after 3 of 3 attempts: boom"
    assert reasons[backing_off.name].startswith("backing off until")
    assert WorkflowStep.objects.filter(task=task).count() == 5
    assert NamedStep.objects.filter(named_task=task.named_task).count() == 5


# -- create_test_* helpers -------------------------------------------------------------------


def test_create_test_foundation_defaults() -> None:
    foundation = create_test_foundation()
    assert isinstance(foundation, Foundation)
    assert foundation.namespace.name == "default"
    assert (foundation.named_task.name, foundation.named_task.version) == ("test_task", "1.0.0")
    assert foundation.named_task.namespace == foundation.namespace
    assert foundation.named_step.name == "test_step"
    assert foundation.named_step.named_task == foundation.named_task
    assert foundation.named_step.handler_class == "tasker.noop"


def test_create_test_foundation_is_get_or_create() -> None:
    first = create_test_foundation()
    second = create_test_foundation()
    assert first.namespace.pk == second.namespace.pk
    assert first.named_task.pk == second.named_task.pk
    assert first.named_step.pk == second.named_step.pk
    assert Namespace.objects.filter(name="default").count() == 1
    assert NamedTask.objects.filter(name="test_task").count() == 1
    assert NamedStep.objects.filter(name="test_step").count() == 1


def test_create_test_foundation_with_other_names() -> None:
    base = create_test_foundation()
    other = create_test_foundation(
        namespace="payments", task_name="refund", step_name="check", handler_class="test.echo"
    )
    again = create_test_foundation(namespace="payments", task_name="refund", step_name="check")
    assert other.namespace.name == "payments" and other.named_task.name == "refund"
    assert other.named_step.handler_class == "test.echo"
    assert other.named_task.pk != base.named_task.pk
    assert again.named_step.pk == other.named_step.pk
    # a second step name in the same template adds a step, not a template
    extra = create_test_foundation(step_name="second")
    assert extra.named_task.pk == base.named_task.pk
    assert extra.named_step.pk != base.named_step.pk
    assert NamedTask.objects.count() == 2


def test_create_test_task_and_workflow_steps() -> None:
    task = create_test_task(context={"order": 7}, tags=["t"])
    assert task.named_task == create_test_foundation().named_task
    assert (task.context, task.tags, task.total_steps) == ({"order": 7}, ["t"], 0)

    first = create_test_workflow_step(task, inputs={"a": 1})
    task.refresh_from_db()
    assert task.total_steps == 1
    second = create_test_workflow_step(task, status=StepStatus.ENQUEUED)
    reused = create_test_workflow_step(task, name="test_step")
    task.refresh_from_db()
    assert task.total_steps == 3
    assert (first.name, second.name) == ("step_1", "step_2")
    assert first.inputs == {"a": 1} and second.status == StepStatus.ENQUEUED
    assert reused.named_step == create_test_foundation().named_step
    assert {s.named_step.named_task_id for s in (first, second, reused)} == {task.named_task_id}


def test_create_test_task_with_a_template_and_fields() -> None:
    named_task = NamedTaskFactory.create(name="custom")
    task = create_test_task(named_task=named_task, status=TaskStatus.IN_PROGRESS, priority=4)
    assert task.named_task == named_task
    assert (task.status, task.priority) == (TaskStatus.IN_PROGRESS, 4)
    assert task.tags == []


def test_load_test_template_returns_the_current_named_task() -> None:
    named_task = load_test_template(chain_yaml("helper_chain", 3))
    assert named_task.is_current and named_task.name == "helper_chain"
    assert list(named_task.named_steps.values_list("name", flat=True)) == ["s0", "s1", "s2"]
    replaced = load_test_template(chain_yaml("helper_chain", 2))  # force=True by default
    assert replaced.revision == 2 and replaced.named_steps.count() == 2


# -- FakeClock -------------------------------------------------------------------------------


def test_fake_clock_advance_and_set() -> None:
    start = timezone.now() - timedelta(days=1)
    clock = FakeClock(start)
    assert clock.now() == start
    assert clock.advance(90) == start + timedelta(seconds=90) == clock.now()
    clock.advance(0.5)
    assert clock.now() == start + timedelta(seconds=90.5)
    clock.set(start + timedelta(hours=1))
    assert clock.now() == start + timedelta(hours=1)
    clock.set(start)  # never moves backwards
    assert clock.now() == start + timedelta(hours=1)


def test_fake_clock_defaults_to_now() -> None:
    before = timezone.now()
    clock = FakeClock()
    assert before <= clock.now() <= timezone.now()
    time.sleep(0.01)
    assert clock.now() == clock.now()  # does not move on its own


# -- run_task_to_completion ------------------------------------------------------------------


def test_run_task_to_completion_jumps_the_fake_clock_over_backoff() -> None:
    load_test_template(
        chain_yaml(
            "helper_backoff",
            1,
            handler="test.flaky",
            default_retry_limit=3,
            handler_config={"fail_times": 2},
            retry_backoff={
                "initial_delay": 60,
                "multiplier": 2,
                "max_delay": 3600,
                "jitter": False,
            },
        )
    )
    task = create_task("helper_backoff")
    clock = FakeClock()
    start = clock.now()
    wall = time.monotonic()
    task = run_task_to_completion(task, clock=clock)
    elapsed = time.monotonic() - wall
    assert task.status == TaskStatus.COMPLETE
    step = WorkflowStep.objects.get(task=task)
    assert step.attempts == 3 and step.results == {"attempts": 3}
    # 60 s after the first failure, 120 s after the second: 180 s of fake time, no sleeping.
    assert clock.now() - start >= timedelta(seconds=180)
    assert elapsed < 10
    finished = list(
        StepAttempt.objects.filter(step=step)
        .order_by("attempt_number")
        .values_list("finished_at", flat=True)
    )
    assert len(finished) == 3
    assert finished[1] - finished[0] >= timedelta(seconds=60)
    assert finished[2] - finished[1] >= timedelta(seconds=120)
    assert step.completed_at is not None and step.completed_at - start >= timedelta(seconds=180)


def test_run_task_to_completion_returns_a_refreshed_task() -> None:
    load_test_template(chain_yaml("helper_refresh", 4))
    task = create_task("helper_refresh")
    assert task.completed_steps == 0
    done = run_task_to_completion(task)
    assert done.status == TaskStatus.COMPLETE and done.completed_steps == 4
    assert done.completed_at is not None


def test_run_task_to_completion_stops_at_a_failure() -> None:
    load_test_template(chain_yaml("helper_fail", 3, handler="test.permanent"))
    task = run_task_to_completion(create_task("helper_fail"))
    assert task.status == TaskStatus.ERROR
    statuses = dict(WorkflowStep.objects.filter(task=task).values_list("name", "status"))
    assert statuses == {"s0": StepStatus.ERROR, "s1": StepStatus.PENDING, "s2": StepStatus.PENDING}


def test_run_task_to_completion_runs_a_task_built_with_the_helpers() -> None:
    task = create_test_task()
    step = create_test_workflow_step(task, status=StepStatus.ENQUEUED)
    task = run_task_to_completion(task)
    step.refresh_from_db()
    assert step.status == StepStatus.COMPLETE and step.results == {"ok": True}
    assert task.status == TaskStatus.COMPLETE


# -- pytest plugin -------------------------------------------------------------------------


def test_pytest_plugin_is_loaded_from_the_entry_point(request: pytest.FixtureRequest) -> None:
    import tasker_django.testing.pytest_plugin as plugin_module

    manager = request.config.pluginmanager
    assert manager.get_plugin("tasker_django") is plugin_module
    dists = {dist.project_name for _, dist in manager.list_plugin_distinfo()}
    assert "tasker-django" in dists or "tasker_django" in dists
    for name in ("tasker_registry", "tasker_foundation", "tasker_load_template", "tasker_run"):
        assert request.getfixturevalue(name) is not None


@pytest.fixture
def plugin_handler_gone_afterwards() -> Iterator[None]:
    # Set up before tasker_registry, so torn down after it: sees the restored registry.
    assert PLUGIN_HANDLER not in registry
    yield
    assert PLUGIN_HANDLER not in registry


def test_tasker_registry_fixture_isolates_registrations(
    plugin_handler_gone_afterwards: None, tasker_registry: Any
) -> None:
    assert tasker_registry is registry
    before = len(tasker_registry)

    class PluginOnly(StepHandler, name=PLUGIN_HANDLER):
        def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
            return {"plugin": True}

    assert PLUGIN_HANDLER in tasker_registry
    assert len(tasker_registry) == before + 1
    assert tasker_registry.resolve(PLUGIN_HANDLER).handler_class is PluginOnly


def test_tasker_foundation_fixture(tasker_foundation: Any) -> None:
    assert isinstance(tasker_foundation, Foundation)
    assert tasker_foundation.named_step.named_task == tasker_foundation.named_task
    assert create_test_foundation().named_task.pk == tasker_foundation.named_task.pk


def test_tasker_load_template_and_tasker_run_fixtures(
    tasker_load_template: Any, tasker_run: Any
) -> None:
    named_task = tasker_load_template(chain_yaml("plugin_chain", 2, handler="test.echo"))
    assert isinstance(named_task, NamedTask) and named_task.named_steps.count() == 2
    task = tasker_run(create_task("plugin_chain", context={"value": 5}))
    assert isinstance(task, Task)
    assert task.status == TaskStatus.COMPLETE
    last = WorkflowStep.objects.get(task=task, name="s1")
    assert last.results == {"value": 5, "parents": {"s0": {"value": 5, "parents": {}}}}


def test_tasker_run_accepts_a_clock(tasker_load_template: Any, tasker_run: Any) -> None:
    tasker_load_template(
        chain_yaml(
            "plugin_backoff",
            1,
            handler="test.flaky",
            default_retry_limit=2,
            retry_backoff={"initial_delay": 600, "max_delay": 600, "jitter": False},
        )
    )
    clock = FakeClock()
    start = clock.now()
    task = tasker_run(create_task("plugin_backoff"), clock=clock)
    assert task.status == TaskStatus.COMPLETE
    assert clock.now() - start >= timedelta(seconds=600)
