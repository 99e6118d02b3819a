"""Errors a step handler raises, and errors of handler lookup and registration.

A handler signals the outcome of a failed attempt with :class:`PermanentError`
(do not retry) or :class:`RetryableError` (retry under the step's policy). Any other
exception counts as retryable. Both survive pickling, since django-q2 may pickle
exceptions between processes.
"""

from __future__ import annotations

import copy
import math
from datetime import timedelta
from typing import Any

__all__ = [
    "AmbiguousHandler",
    "HandlerConfigurationError",
    "HandlerNotFound",
    "PermanentError",
    "RetryableError",
    "StepError",
]


def _rebuild_error(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    """Unpickle an error without calling its ``__init__`` (subclasses may change it)."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class _PicklableError(BaseException):
    """Pickles ``args`` and instance attributes, whatever ``__init__`` looks like."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), self.args, dict(self.__dict__)))


class StepError(_PicklableError, Exception):
    """Base class of the errors a step handler raises on purpose."""

    message: str
    error_category: str | None
    context: dict[str, Any]

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, as stored on the failed attempt."""
        return {
            "error_class": type(self).__name__,
            "message": self.message,
            "error_category": self.error_category,
            "context": copy.deepcopy(self.context),
        }


class PermanentError(StepError):
    """The step failed and retrying cannot help (bad input, business rule violated)."""

    def __init__(
        self,
        message: str,
        error_code: str | None = None,
        error_category: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = str(message)
        self.error_code = error_code
        self.error_category = error_category
        self.context = dict(context) if context else {}

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        return {
            "error_class": data["error_class"],
            "message": data["message"],
            "error_code": self.error_code,
            "error_category": data["error_category"],
            "context": data["context"],
        }


class RetryableError(StepError):
    """A transient failure: the step is retried, after ``retry_after`` seconds if given."""

    def __init__(
        self,
        message: str,
        error_category: str | None = None,
        retry_after: float | timedelta | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = str(message)
        self.error_category = error_category
        self.retry_after = _seconds(retry_after)
        self.context = dict(context) if context else {}

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        return {
            "error_class": data["error_class"],
            "message": data["message"],
            "error_category": data["error_category"],
            "retry_after": self.retry_after,
            "context": data["context"],
        }


def _seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"retry_after must be a number of seconds, not {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"retry_after must be a finite number of seconds >= 0, not {value!r}")
    return seconds


class HandlerNotFound(_PicklableError, LookupError):
    """No step handler matches a name, alias, dotted path or Ruby-style ``A::B::C``."""

    def __init__(
        self,
        reference: object,
        namespace: str | None = None,
        suggestions: list[str] | None = None,
        reason: str | None = None,
    ) -> None:
        self.reference = reference
        self.namespace = namespace
        self.suggestions = list(suggestions or [])
        self.reason = reason
        parts = [f"No step handler matches {reference!r}"]
        if namespace is not None:
            parts[0] += f" (namespace {namespace!r})"
        parts[0] += "."
        if reason:
            parts.append(reason.rstrip(".") + ".")
        if self.suggestions:
            parts.append("Did you mean " + " or ".join(repr(s) for s in self.suggestions) + "?")
        parts.append(
            "Define a StepHandler subclass in a 'tasker_handlers' module of an installed app, "
            "register it in TASKER['HANDLERS'], or use a dotted path 'package.module.Class'."
        )
        self.message = " ".join(parts)
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class AmbiguousHandler(_PicklableError, LookupError):
    """A bare handler name is registered by several classes in different namespaces."""

    def __init__(self, reference: str, namespace: str | None, candidates: list[str]) -> None:
        self.reference = reference
        self.namespace = namespace
        self.candidates = list(candidates)
        where = "" if namespace is None else f" and none of them in namespace {namespace!r}"
        self.message = (
            f"Step handler name {reference!r} is ambiguous: it is registered by several "
            f"handlers{where}: {'; '.join(self.candidates)}. "
            "Use the dotted path of the class, or a name registered only once."
        )
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class HandlerConfigurationError(_PicklableError, ValueError):
    """An entry of ``TASKER['HANDLERS']`` or of ``TASKER['HANDLERS_FILE']`` is invalid."""
