"""The seed's factory helpers, for Django tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..models import NamedStep, NamedTask, Namespace, Task, WorkflowStep
from . import handlers as _handlers  # noqa: F401  (registers tasker.noop)
from .factories import (
    NamedStepFactory,
    NamedTaskFactory,
    NamespaceFactory,
    TaskFactory,
    WorkflowStepFactory,
)


@dataclass(frozen=True)
class Foundation:
    namespace: Namespace
    named_task: NamedTask
    named_step: NamedStep


def create_test_foundation(
    namespace: str = "default",
    task_name: str = "test_task",
    step_name: str = "test_step",
    version: str = "1.0.0",
    handler_class: str = "tasker.noop",
) -> Foundation:
    """A namespace, a named task and a named step (get-or-create by name)."""
    ns = NamespaceFactory.create(name=namespace)
    named_task = NamedTask.objects.filter(
        namespace=ns, name=task_name, version=version, is_current=True
    ).first() or NamedTaskFactory.create(namespace=ns, name=task_name, version=version)
    named_step = NamedStep.objects.filter(named_task=named_task, name=step_name).first()
    if named_step is None:
        named_step = NamedStepFactory.create(
            named_task=named_task, name=step_name, handler_class=handler_class
        )
    return Foundation(ns, named_task, named_step)


def create_test_task(
    context: dict[str, Any] | None = None,
    tags: list[Any] | dict[str, Any] | None = None,
    named_task: NamedTask | None = None,
    **fields: Any,
) -> Task:
    """A task row without steps (add them with :func:`create_test_workflow_step`)."""
    if named_task is None:
        named_task = create_test_foundation().named_task
    return TaskFactory.create(
        named_task=named_task,
        context=context or {},
        tags=tags if tags is not None else [],
        **fields,
    )


def create_test_workflow_step(
    task: Task,
    inputs: dict[str, Any] | None = None,
    name: str | None = None,
    **fields: Any,
) -> WorkflowStep:
    """A workflow step of ``task``; its named step is created in the task's template."""
    name = name or f"step_{WorkflowStep.objects.filter(task=task).count() + 1}"
    named_step = NamedStep.objects.filter(named_task=task.named_task, name=name).first()
    if named_step is None:
        named_step = NamedStepFactory.create(named_task=task.named_task, name=name)
    step = WorkflowStepFactory.create(
        task=task, named_step=named_step, name=name, inputs=inputs or {}, **fields
    )
    Task.objects.filter(pk=task.pk).update(
        total_steps=WorkflowStep.objects.filter(task=task).count()
    )
    return step


def load_test_template(
    text: str, *, environment: str | None = None, force: bool = True
) -> NamedTask:
    """Parse YAML template text and store it (handlers must be registered)."""
    from ..definitions import parse_template
    from ..services.templates import handler_resolver, save_template

    template = parse_template(
        text, source="<test>", environment=environment, handler_resolver=handler_resolver
    )
    return save_template(template, force=force).named_task
