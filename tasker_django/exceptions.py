"""Domain exceptions raised by services. Handler errors live in ``handlers.errors``."""

from __future__ import annotations

from typing import Any


class TaskerError(Exception):
    """Base class of the errors services raise for bad requests."""


class TemplateNotFound(TaskerError, LookupError):
    """No loaded or on-disk template matches namespace, name and version."""


class TaskValidationError(TaskerError, ValueError):
    """A task's context (or another input) is invalid.

    ``errors`` is a list of ``{"path": "$.a.b", "message": "..."}`` dicts, one per
    problem found; ``str()`` lists them all.
    """

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        self.message = message
        self.errors = list(errors or [])
        super().__init__(message)

    def __str__(self) -> str:
        if not self.errors:
            return self.message
        lines = [f"  {e['path']}: {e['message']}" for e in self.errors]
        return "\n".join([self.message, *lines])


class TaskQueueFull(TaskValidationError):
    """The template already has ``performance.concurrency.queue_size`` tasks waiting."""


class InvalidTransition(TaskerError):
    """The requested state change is not allowed from the current state."""


class TemplateConflict(TaskerError):
    """A template's content changed but its namespace, name and version did not."""
