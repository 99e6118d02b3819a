"""``StepHandler``: the base class of the code that runs one workflow step.

Subclasses register themselves in :data:`tasker_django.handlers.registry.registry`
when they are defined::

    class ValidatePaymentHandler(StepHandler, namespace="payments", aliases=("validate",)):
        def process(self, task, sequence, step):
            return {"valid": True}

Pass ``register=False`` (or set ``abstract = True`` in the class body) for base classes
and mixins that are not handlers themselves.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from .views import StepSequence, StepView, TaskView

__all__ = ["StepHandler", "dotted_path"]


def dotted_path(cls: type) -> str:
    """``module.QualName`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise ValueError(f"{what} must be a non-empty string without surrounding spaces")
    return value


class StepHandler:
    """Base class of step handlers. Override :meth:`process`."""

    #: Registered name; defaults to the class name.
    handler_name: ClassVar[str] = "StepHandler"
    #: Namespace of the registration; inherited by subclasses unless they pass their own.
    handler_namespace: ClassVar[str] = "default"
    #: Version of the registration; inherited by subclasses unless they pass their own.
    handler_version: ClassVar[str] = "0.0.0"
    #: Other names the handler resolves under (never inherited).
    handler_aliases: ClassVar[tuple[str, ...]] = ()
    #: Set ``abstract = True`` in a class body to keep that class out of the registry.
    abstract: ClassVar[bool] = True

    # Set by the engine on the instance while a step runs.
    _tasker_heartbeat: Callable[[], None] | None = None
    _tasker_publish_event: Callable[[str, dict[str, Any]], None] | None = None
    _tasker_record_metric: Callable[[str, Any, dict[str, Any] | None, bool], bool] | None = None

    def __init_subclass__(
        cls,
        *,
        register: bool = True,
        name: str | None = None,
        namespace: str | None = None,
        version: str | None = None,
        aliases: tuple[str, ...] | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        cls.handler_name = _check_str(
            name if name is not None else own.get("handler_name", cls.__name__), "name"
        )
        cls.handler_namespace = _check_str(
            namespace if namespace is not None else cls.handler_namespace, "namespace"
        )
        cls.handler_version = _check_str(
            version if version is not None else cls.handler_version, "version"
        )
        if aliases is None:
            aliases = own.get("handler_aliases", ())
        if isinstance(aliases, str):
            raise TypeError("aliases must be a tuple of strings, not a string")
        cls.handler_aliases = tuple(_check_str(alias, "alias") for alias in aliases or ())
        if "abstract" not in own:
            cls.abstract = False
        if register and not cls.abstract:
            from .registry import registry

            registry.register(
                cls,
                name=cls.handler_name,
                namespace=cls.handler_namespace,
                version=cls.handler_version,
                aliases=cls.handler_aliases,
                source="class",
            )

    def __init__(
        self, config: dict[str, Any] | None = None, logger: logging.Logger | None = None
    ) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self.logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = (
            logger or logging.getLogger(f"tasker_django.handlers.{self.handler_name}")
        )

    def __repr__(self) -> str:
        return (
            f"<{type(self).__qualname__} {self.handler_namespace}/{self.handler_name}"
            f"@{self.handler_version}>"
        )

    def process(self, task: TaskView, sequence: StepSequence, step: StepView) -> dict[str, Any]:
        """Do the step's work and return its results (a JSON object).

        Raise :class:`~tasker_django.handlers.errors.PermanentError` for failures that a
        retry cannot fix and :class:`~tasker_django.handlers.errors.RetryableError` for
        transient ones.
        """
        raise NotImplementedError(
            f"{dotted_path(type(self))} must implement "
            "process(self, task, sequence, step) and return a dict of results"
        )

    def process_results(
        self,
        step: StepView,
        process_output: Any,
        initial_results: dict[str, Any] | None = None,
    ) -> Any:
        """Turn ``process()``'s output into the results stored on the step.

        ``initial_results`` are the step's results before this attempt (None on the
        first). The default stores ``process_output`` unchanged.
        """
        return process_output

    def heartbeat(self) -> None:
        """Extend the running step's lease; call it during long work. No-op outside tasker."""
        callback = self._tasker_heartbeat
        if callback is not None:
            callback()

    def publish_event(self, name: str, payload: dict[str, Any] | None = None) -> None:
        """Publish a custom event (declared in the template) for the running step."""
        callback = self._tasker_publish_event
        if callback is None:
            raise RuntimeError(
                "publish_event is only available while the handler runs inside tasker"
            )
        callback(name, dict(payload or {}))

    def service(self, name: str, default: Any = None) -> Any:
        """The external service ``name``: an instance of ``TASKER["SERVICES"][name]``.

        ``default`` (a class or dotted path) is used when the setting does not name
        the service. In a test scenario the template's ``testing.mock_services`` mock
        replaces it (see :mod:`tasker_django.handlers.services`).
        """
        from .services import get_service

        return get_service(self, name, default)

    def record_metric(
        self,
        name: str,
        value: float = 1,
        labels: dict[str, Any] | None = None,
        *,
        required: bool = True,
    ) -> bool:
        """Record a value of a metric the template declares (``monitoring.metrics``).

        Counters add ``value`` (default 1; negative values are refused), gauges set it,
        histograms observe it. An undeclared name raises PermanentError
        ``UNDECLARED_METRIC`` unless ``required=False`` (then nothing is recorded and
        False is returned); a non-number raises ``INVALID_METRIC_VALUE``.
        """
        callback = self._tasker_record_metric
        if callback is None:
            raise RuntimeError(
                "record_metric is only available while the handler runs inside tasker"
            )
        return callback(name, value, labels, required)

    @classmethod
    def class_metadata(cls, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """:attr:`metadata` without an instance, for the given config."""
        capabilities = []
        if cls.process is not StepHandler.process:
            capabilities.append("process")
        if cls.process_results is not StepHandler.process_results:
            capabilities.append("process_results")
        capabilities += ["heartbeat", "publish_event"]
        doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
        return {
            "handler_name": cls.handler_name,
            "handler_class": dotted_path(cls),
            "namespace": cls.handler_namespace,
            "version": cls.handler_version,
            "config_keys": sorted(str(key) for key in (config or {})),
            "capabilities": capabilities,
            "description": doc.splitlines()[0] if doc else "",
        }

    @property
    def metadata(self) -> dict[str, Any]:
        """Name, class, namespace, version, config keys, capabilities and description."""
        return self.class_metadata(self.config)
