"""Validated, normalised task templates as frozen dataclasses (JSON round-trippable)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .graph import dependency_levels

DEFAULT_INITIAL_DELAY = 1.0
DEFAULT_MAX_DELAY = 300.0
DEFAULT_MULTIPLIER = 2.0


@dataclass(frozen=True)
class Backoff:
    """Delay between attempts: ``initial_delay * multiplier**n`` (exponential), capped."""

    strategy: str = "exponential"
    initial_delay: float = DEFAULT_INITIAL_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    multiplier: float = DEFAULT_MULTIPLIER
    jitter: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "initial_delay": self.initial_delay,
            "max_delay": self.max_delay,
            "multiplier": self.multiplier,
            "jitter": self.jitter,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Backoff:
        return cls(
            strategy=str(d.get("strategy", "exponential")),
            initial_delay=float(d.get("initial_delay", DEFAULT_INITIAL_DELAY)),
            max_delay=float(d.get("max_delay", DEFAULT_MAX_DELAY)),
            multiplier=float(d.get("multiplier", DEFAULT_MULTIPLIER)),
            jitter=bool(d.get("jitter", True)),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class StepDefinition:
    """One step of a template, after aliases, defaults and environment overrides."""

    name: str
    description: str = ""
    handler_class: str = ""
    handler_config: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    retryable: bool = True
    max_attempts: int | None = None
    skippable: bool = False
    timeout_seconds: float | None = None
    backoff: Backoff | None = None
    dependent_system: str | None = None
    custom_events: tuple[dict[str, Any], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "handler_class": self.handler_class,
            "handler_config": copy.deepcopy(self.handler_config),
            "depends_on": list(self.depends_on),
            "retryable": self.retryable,
            "max_attempts": self.max_attempts,
            "skippable": self.skippable,
            "timeout_seconds": self.timeout_seconds,
            "backoff": self.backoff.to_dict() if self.backoff else None,
            "dependent_system": self.dependent_system,
            "custom_events": copy.deepcopy(list(self.custom_events)),
            "extra": copy.deepcopy(self.extra),
            "line": self.line,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepDefinition:
        backoff = d.get("backoff")
        return cls(
            name=str(d["name"]),
            description=str(d.get("description") or ""),
            handler_class=str(d.get("handler_class") or ""),
            handler_config=copy.deepcopy(dict(d.get("handler_config") or {})),
            depends_on=tuple(d.get("depends_on") or ()),
            retryable=bool(d.get("retryable", True)),
            max_attempts=_opt_int(d.get("max_attempts")),
            skippable=bool(d.get("skippable", False)),
            timeout_seconds=_opt_float(d.get("timeout_seconds")),
            backoff=Backoff.from_dict(backoff) if backoff is not None else None,
            dependent_system=d.get("dependent_system"),
            custom_events=tuple(copy.deepcopy(list(d.get("custom_events") or ()))),
            extra=copy.deepcopy(dict(d.get("extra") or {})),
            line=_opt_int(d.get("line")),
        )


@dataclass(frozen=True)
class TaskTemplate:
    """A whole validated template. ``to_dict()`` is JSON and ``from_dict`` inverts it."""

    namespace: str
    name: str
    version: str
    description: str = ""
    module_namespace: str | None = None
    task_handler_class: str | None = None
    default_dependent_system: str | None = None
    schema: dict[str, Any] | None = None
    steps: tuple[StepDefinition, ...] = ()
    named_steps: tuple[str, ...] | None = None
    task_config: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    workflow_config: dict[str, Any] = field(default_factory=dict)
    custom_events: tuple[dict[str, Any], ...] = ()
    sections: dict[str, Any] = field(default_factory=dict)
    environment: str | None = None
    environments: tuple[str, ...] = ()
    source: str = "<string>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "module_namespace": self.module_namespace,
            "task_handler_class": self.task_handler_class,
            "default_dependent_system": self.default_dependent_system,
            "schema": copy.deepcopy(self.schema),
            "steps": [step.to_dict() for step in self.steps],
            "named_steps": list(self.named_steps) if self.named_steps is not None else None,
            "task_config": copy.deepcopy(self.task_config),
            "settings": copy.deepcopy(self.settings),
            "workflow_config": copy.deepcopy(self.workflow_config),
            "custom_events": copy.deepcopy(list(self.custom_events)),
            "sections": copy.deepcopy(self.sections),
            "environment": self.environment,
            "environments": list(self.environments),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TaskTemplate:
        named = d.get("named_steps")
        schema = d.get("schema")
        return cls(
            namespace=str(d.get("namespace") or "default"),
            name=str(d["name"]),
            version=str(d["version"]),
            description=str(d.get("description") or ""),
            module_namespace=d.get("module_namespace"),
            task_handler_class=d.get("task_handler_class"),
            default_dependent_system=d.get("default_dependent_system"),
            schema=copy.deepcopy(dict(schema)) if schema is not None else None,
            steps=tuple(StepDefinition.from_dict(s) for s in d.get("steps") or ()),
            named_steps=tuple(named) if named is not None else None,
            task_config=copy.deepcopy(dict(d.get("task_config") or {})),
            settings=copy.deepcopy(dict(d.get("settings") or {})),
            workflow_config=copy.deepcopy(dict(d.get("workflow_config") or {})),
            custom_events=tuple(copy.deepcopy(list(d.get("custom_events") or ()))),
            sections=copy.deepcopy(dict(d.get("sections") or {})),
            environment=d.get("environment"),
            environments=tuple(d.get("environments") or ()),
            source=str(d.get("source", "<string>")),
        )

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON of ``to_dict()`` without ``source`` and step lines.

        Adding comments or blank lines keeps the hash; any change of meaning alters it.
        """
        data = self.to_dict()
        del data["source"]
        for step in data["steps"]:
            del step["line"]
        canonical = json.dumps(
            data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @cached_property
    def _steps_by_name(self) -> dict[str, StepDefinition]:
        return {step.name: step for step in self.steps}

    def step(self, name: str) -> StepDefinition:
        """The step called ``name``; ``KeyError`` if there is none."""
        try:
            return self._steps_by_name[name]
        except KeyError:
            raise KeyError(f"template {self.name!r} has no step {name!r}") from None

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps)

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """``(parent, child)`` pairs in template order."""
        return tuple((parent, step.name) for step in self.steps for parent in step.depends_on)

    def levels(self) -> list[list[str]]:
        """Steps grouped by dependency depth (level 0 has no parents)."""
        return dependency_levels(self.step_names, self.edges)
