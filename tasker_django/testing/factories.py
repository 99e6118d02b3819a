"""factory-boy factories for tasker-django models, with traits for common states."""

from __future__ import annotations

from typing import Any

import factory
from django.utils import timezone

from ..models import (
    NamedStep,
    NamedTask,
    Namespace,
    StepStatus,
    Task,
    TaskStatus,
    WorkflowStep,
)

NOOP = "tasker.noop"


def _template(named_task: Any) -> dict[str, Any]:
    return {
        "namespace": named_task.namespace.name,
        "name": named_task.name,
        "version": named_task.version,
        "description": "",
        "steps": [],
        "task_config": {},
        "settings": {},
    }


class NamespaceFactory(factory.django.DjangoModelFactory[Namespace]):
    class Meta:
        model = Namespace
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"namespace_{n}")


class NamedTaskFactory(factory.django.DjangoModelFactory[NamedTask]):
    class Meta:
        model = NamedTask

    namespace = factory.SubFactory(NamespaceFactory)
    name = factory.Sequence(lambda n: f"task_{n}")
    version = "1.0.0"
    template = factory.LazyAttribute(_template)
    content_hash = factory.Sequence(lambda n: f"{n:064x}")


class NamedStepFactory(factory.django.DjangoModelFactory[NamedStep]):
    class Meta:
        model = NamedStep

    named_task = factory.SubFactory(NamedTaskFactory)
    name = factory.Sequence(lambda n: f"step_{n}")
    handler_class = NOOP
    max_attempts = 3


class TaskFactory(factory.django.DjangoModelFactory[Task]):
    class Meta:
        model = Task

    named_task = factory.SubFactory(NamedTaskFactory)
    context = factory.LazyFunction(dict)
    tags = factory.LazyFunction(list)
    status = TaskStatus.PENDING

    class Params:
        in_progress = factory.Trait(
            status=TaskStatus.IN_PROGRESS, started_at=factory.LazyFunction(timezone.now)
        )
        complete = factory.Trait(
            status=TaskStatus.COMPLETE,
            started_at=factory.LazyFunction(timezone.now),
            completed_at=factory.LazyFunction(timezone.now),
        )
        error = factory.Trait(
            status=TaskStatus.ERROR,
            started_at=factory.LazyFunction(timezone.now),
            completed_at=factory.LazyFunction(timezone.now),
        )
        cancelled = factory.Trait(
            status=TaskStatus.CANCELLED, completed_at=factory.LazyFunction(timezone.now)
        )


class WorkflowStepFactory(factory.django.DjangoModelFactory[WorkflowStep]):
    class Meta:
        model = WorkflowStep

    task = factory.SubFactory(TaskFactory)
    named_step = factory.SubFactory(
        NamedStepFactory, named_task=factory.SelfAttribute("..task.named_task")
    )
    name = factory.SelfAttribute("named_step.name")
    max_attempts = 3
    inputs = factory.LazyFunction(dict)
    status = StepStatus.PENDING

    class Params:
        enqueued = factory.Trait(
            status=StepStatus.ENQUEUED, enqueued_at=factory.LazyFunction(timezone.now)
        )
        in_progress = factory.Trait(
            status=StepStatus.IN_PROGRESS,
            attempts=1,
            claimed_at=factory.LazyFunction(timezone.now),
            started_at=factory.LazyFunction(timezone.now),
            worker_id="test-worker",
        )
        complete = factory.Trait(
            status=StepStatus.COMPLETE,
            attempts=1,
            results=factory.LazyFunction(lambda: {"ok": True}),
            completed_at=factory.LazyFunction(timezone.now),
        )
        error = factory.Trait(
            status=StepStatus.ERROR,
            attempts=3,
            last_error=factory.LazyFunction(
                lambda: {"error_class": "RuntimeError", "message": "boom"}
            ),
        )
        waiting_for_retry = factory.Trait(
            status=StepStatus.WAITING_FOR_RETRY,
            attempts=1,
            next_attempt_at=factory.LazyFunction(timezone.now),
        )
