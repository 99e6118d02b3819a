"""Read-only snapshots a step handler receives: the task, its steps, the current step.

The engine builds them from the database and deep-copies the JSON data, so a handler
that mutates ``context`` or ``inputs`` changes nothing stored. Handler unit tests can
build them directly: every field but ``id`` and ``name`` has a default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

__all__ = ["FINISHED_STEP_STATUSES", "StepSequence", "StepView", "TaskView"]

#: Step statuses that satisfy a child's dependency; their results are visible.
FINISHED_STEP_STATUSES: frozenset[str] = frozenset({"complete", "resolved_manually"})


@dataclass(frozen=True)
class TaskView:
    """The task a step belongs to."""

    id: int
    context: dict[str, Any] = field(default_factory=dict)
    tags: list[Any] | dict[str, Any] = field(default_factory=list)
    namespace: str = "default"
    name: str = ""
    version: str = "0.0.0"
    initiator: str | None = None
    source_system: str | None = None
    reason: str | None = None
    priority: int = 0

    @property
    def task_id(self) -> int:
        """Alias of ``id`` (the Ruby API's name)."""
        return self.id


@dataclass(frozen=True)
class StepView:
    """One workflow step of the task."""

    id: int
    name: str
    inputs: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    max_attempts: int = 3
    results: dict[str, Any] | None = None
    status: str = "pending"
    retryable: bool = True

    @property
    def workflow_step_id(self) -> int:
        """Alias of ``id`` (the Ruby API's name)."""
        return self.id

    @property
    def is_finished(self) -> bool:
        """Whether the step is ``complete`` or ``resolved_manually``."""
        return self.status in FINISHED_STEP_STATUSES


@dataclass(frozen=True)
class StepSequence:
    """Steps of the task visible to the handler, in topological (position) order, and the
    current one.

    ``steps`` holds every step of the task, or (as the engine builds it, to keep the cost
    of a step independent of the task's size) the current step's parents and the current
    step. In that case the engine also passes ``task_total_steps`` and ``current_index``
    (the current step's 0-based position in the whole task).
    """

    steps: tuple[StepView, ...] = ()
    current: StepView | None = None
    task_id: int | None = None
    task_total_steps: int | None = None
    current_index: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.steps, tuple):
            object.__setattr__(self, "steps", tuple(self.steps))

    @cached_property
    def _by_name(self) -> dict[str, StepView]:
        return {step.name: step for step in self.steps}

    @cached_property
    def _finished_results(self) -> dict[str, dict[str, Any]]:
        return {step.name: step.results or {} for step in self.steps if step.is_finished}

    @property
    def step_results(self) -> dict[str, dict[str, Any]]:
        """Step name -> results, for finished (``complete``/``resolved_manually``) steps."""
        return dict(self._finished_results)

    def find_step_by_name(self, name: str) -> StepView | None:
        """The step called ``name``, or None."""
        return self._by_name.get(name)

    @property
    def total_steps(self) -> int:
        """Number of steps of the task."""
        if self.task_total_steps is not None:
            return self.task_total_steps
        return len(self.steps)

    @property
    def current_position(self) -> int:
        """1-based position of the current step in the task; 0 if there is none."""
        if self.current is None:
            return 0
        if self.current_index is not None:
            return self.current_index + 1
        for position, step in enumerate(self.steps, start=1):
            if step.id == self.current.id:
                return position
        return 0
