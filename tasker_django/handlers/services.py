"""External services for step handlers, swappable for mocks in test scenarios.

A handler asks for a service by name with ``self.service("payment_gateway")`` and
gets an instance of ``TASKER["SERVICES"]["payment_gateway"]`` (a class or a dotted
path to one, instantiated without arguments, once per handler instance), or of the
``default`` class the handler passes when the setting does not name the service.

While a test scenario runs (``manage.py tasker_test_scenarios`` or the pytest
fixture ``run_tasker_scenario``), the scenario's template maps service names to
mock names (``testing.mock_services``) and ``TASKER["MOCK_SERVICES"]`` maps mock
names to classes: the handler then gets the mock, one instance per scenario run,
created with the scenario as its only argument. Services the template does not
mock are looked up as usual.

The scenario is held in a context variable, so only code running in the thread
(or task) that runs the scenario sees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from django.utils.module_loading import import_string

from .errors import PermanentError

__all__ = [
    "ServiceNotConfigured",
    "get_service",
    "import_class",
    "injected_timeout",
    "scenario_overrides",
]


class ServiceNotConfigured(PermanentError):
    """A handler asked for a service that no setting (and no default) provides."""

    def __init__(self, message: str, *, service: str) -> None:
        super().__init__(
            message,
            error_code="SERVICE_NOT_CONFIGURED",
            error_category="configuration",
            context={"service": service},
        )


class Overrides(Protocol):
    """What a running test scenario changes (implemented by the scenario runner)."""

    def mock_service(self, name: str) -> Any:
        """The mock instance for service ``name``, or :data:`NOT_MOCKED`."""

    def injected_timeout(self, task_id: int, step_name: str, attempt: int) -> str | None:
        """A message when this attempt must time out, else None."""


#: Returned by :meth:`Overrides.mock_service` for a service the scenario does not mock.
NOT_MOCKED: Any = object()

_active: ContextVar[Overrides | None] = ContextVar("tasker_scenario_overrides", default=None)


@contextmanager
def scenario_overrides(overrides: Overrides) -> Iterator[None]:
    """Make ``overrides`` active for the code run inside the block (this thread only)."""
    token = _active.set(overrides)
    try:
        yield
    finally:
        _active.reset(token)


def import_class(value: Any) -> Any:
    """A class given as itself or as a dotted path (ImportError if it does not import)."""
    if isinstance(value, str):
        return import_string(value)
    if callable(value):
        return value
    raise ImportError(f"{value!r} is neither a dotted path nor a class")


def get_service(handler: Any, name: str, default: Any = None) -> Any:
    """The service ``name`` for ``handler`` (see the module docstring)."""
    overrides = _active.get()
    if overrides is not None:
        mock = overrides.mock_service(name)
        if mock is not NOT_MOCKED:
            return mock
    cache: dict[str, Any] = handler.__dict__.setdefault("_tasker_services", {})
    if name in cache:
        return cache[name]
    from ..conf import tasker_settings

    configured = (tasker_settings.SERVICES or {}).get(name)
    factory = configured if configured is not None else default
    if factory is None:
        raise ServiceNotConfigured(
            f"service {name!r} is not configured: add it to TASKER['SERVICES']",
            service=name,
        )
    try:
        cls = import_class(factory)
    except ImportError as exc:
        raise ServiceNotConfigured(
            f"service {name!r} does not import: {exc}", service=name
        ) from exc
    cache[name] = instance = cls()
    return instance


def injected_timeout(task_id: int, step_name: str, attempt: int) -> str | None:
    """The engine asks before running a handler: must this attempt time out (scenarios)?"""
    overrides = _active.get()
    if overrides is None:
        return None
    return overrides.injected_timeout(task_id, step_name, attempt)
