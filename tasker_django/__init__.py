"""tasker-django: DAG workflow orchestration for Django.

The public API is exported lazily (PEP 562) so that importing the package does
not import models and works before ``django.setup()``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "StepHandler": "tasker_django.handlers.base",
    "PermanentError": "tasker_django.handlers.errors",
    "RetryableError": "tasker_django.handlers.errors",
    "registry": "tasker_django.handlers.registry",
    "create_task": "tasker_django.services.tasks",
    "TaskValidationError": "tasker_django.exceptions",
    "TemplateNotFound": "tasker_django.exceptions",
    "InvalidTransition": "tasker_django.exceptions",
    "TaskerError": "tasker_django.exceptions",
}

__all__ = [
    "InvalidTransition",
    "PermanentError",
    "RetryableError",
    "StepHandler",
    "TaskValidationError",
    "TaskerError",
    "TemplateNotFound",
    "__version__",
    "create_task",
    "registry",
]

if TYPE_CHECKING:  # pragma: no cover
    from tasker_django.exceptions import (
        InvalidTransition,
        TaskerError,
        TaskValidationError,
        TemplateNotFound,
    )
    from tasker_django.handlers.base import StepHandler
    from tasker_django.handlers.errors import PermanentError, RetryableError
    from tasker_django.handlers.registry import registry
    from tasker_django.services.tasks import create_task


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tasker_django' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
