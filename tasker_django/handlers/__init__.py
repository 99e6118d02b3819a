"""Step handlers: the base class, the errors they raise, the views they receive, the
registry that maps template ``handler_class`` strings to them, and their discovery.

Imports no models.
"""

from .base import StepHandler
from .errors import (
    AmbiguousHandler,
    HandlerConfigurationError,
    HandlerNotFound,
    PermanentError,
    RetryableError,
    StepError,
)
from .registry import HandlerEntry, HandlerRegistry, registry
from .views import StepSequence, StepView, TaskView

__all__ = [
    "AmbiguousHandler",
    "HandlerConfigurationError",
    "HandlerEntry",
    "HandlerNotFound",
    "HandlerRegistry",
    "PermanentError",
    "RetryableError",
    "StepError",
    "StepHandler",
    "StepSequence",
    "StepView",
    "TaskView",
    "registry",
]
