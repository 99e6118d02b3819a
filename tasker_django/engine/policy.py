"""What the engine needs from a template's behaviour sections, cached per process.

A template revision never changes (I10), so its policy is read from the database
once per worker process and kept by ``NamedTask`` id.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

from ..expressions import Condition, compile_condition
from .publication import (
    DEFAULT_EVENT_POLICY,
    EventPolicy,
    build_event_policy,
    routed_custom_events,
)


@dataclass(frozen=True)
class Escalation:
    condition: Condition
    action: str


@dataclass(frozen=True)
class Policy:
    permanent_errors: frozenset[str] = frozenset()
    retryable_errors: frozenset[str] = frozenset()
    escalations: tuple[Escalation, ...] = ()
    #: Declared custom events: name -> JSON Schema of the payload.
    custom_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Publication toggles, routing to sinks and audit logging (engine/publication.py).
    events: EventPolicy = DEFAULT_EVENT_POLICY
    #: Steps of one task running at once (``technical_constraints``,
    #: ``workflow_config.max_concurrent_steps``; 1 for ``execution_mode: sequential``).
    max_steps_per_task: int | None = None
    #: Steps of all tasks of the template running at once
    #: (``performance.concurrency.max_concurrent_steps``).
    max_steps_per_template: int | None = None
    #: Tasks of the template running at once (``performance.concurrency``).
    max_workflows: int | None = None
    #: Tasks that may wait for their turn (``performance.concurrency.queue_size``).
    queue_size: int | None = None
    #: ``workflow_config.failure_strategy: continue_on_failure``.
    continue_on_failure: bool = False
    #: ``workflow_config.step_timeout_buffer``: seconds added to every step timeout.
    timeout_buffer: float = 0.0
    #: ``settings.error_handling: strict``: unclassified exceptions are permanent.
    strict_errors: bool = False
    #: Kicks sent per broker call (``performance.batching``); None: all at once.
    batch_size: int | None = None
    #: Default priority of new tasks (``task_config.priority``).
    priority: int = 0
    #: Steps no other step depends on: finishing one readies nothing, so the engine
    #: runs a smaller finishing statement for it (engine/pg.py).
    leaves: frozenset[str] = frozenset()

    @property
    def throttled(self) -> bool:
        return self.max_steps_per_task is not None or self.max_steps_per_template is not None

    def classify(self, exc: BaseException) -> bool | None:
        """True: retryable, False: permanent, None: the template does not say.

        The exception's class name or the name of any base class counts.
        """
        names = {cls.__name__ for cls in type(exc).__mro__}
        if names & self.permanent_errors:
            return False
        if names & self.retryable_errors:
            return True
        return None


#: ``task_config.priority`` words; integers are taken as they are.
PRIORITIES = {"lowest": -20, "low": -10, "normal": 0, "medium": 0, "high": 10, "critical": 20}


def priority_value(value: Any) -> int:
    """The integer of a priority (``high`` -> 10); 0 for anything unknown."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.strip().lstrip("-").isdigit():
            return int(value)
        return PRIORITIES.get(value.strip().lower(), 0)
    return 0


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        return None
    return int(value)


def _min(*values: int | None) -> int | None:
    given = [v for v in values if v is not None]
    return min(given) if given else None


def technical_constraint(sections: dict[str, Any], name: str) -> Any:
    """``constraints.technical_constraints[name == name].value``."""
    items = (sections.get("constraints") or {}).get("technical_constraints") or []
    for item in items:
        if isinstance(item, dict) and item.get("name") == name:
            return item.get("value")
    return None


def build_policy(template: dict[str, Any]) -> Policy:
    sections = template.get("sections") or {}
    handling = sections.get("error_handling") or {}
    workflow = template.get("workflow_config") or {}
    performance = sections.get("performance") or {}
    concurrency = performance.get("concurrency") or {}
    batching = performance.get("batching") or {}
    settings = template.get("settings") or {}
    per_task = _min(
        _positive_int(technical_constraint(sections, "max_concurrent_steps")),
        _positive_int(workflow.get("max_concurrent_steps")),
        1 if workflow.get("execution_mode") == "sequential" else None,
    )
    batch_size = None
    if isinstance(batching, dict) and batching:
        batch_size = (
            _positive_int(batching.get("batch_size")) if batching.get("enabled", True) else 1
        )
    escalations = tuple(
        Escalation(compile_condition(rule["condition"]), str(rule.get("action") or ""))
        for rule in handling.get("escalation_rules") or []
        if isinstance(rule, dict) and rule.get("condition")
    )
    return Policy(
        permanent_errors=frozenset(map(str, handling.get("permanent_errors") or [])),
        retryable_errors=frozenset(map(str, handling.get("retryable_errors") or [])),
        escalations=escalations,
        custom_events=declared_events(template),
        events=build_event_policy(template),
        max_steps_per_task=per_task,
        max_steps_per_template=_positive_int(concurrency.get("max_concurrent_steps")),
        max_workflows=_positive_int(concurrency.get("max_concurrent_workflows")),
        queue_size=_positive_int(concurrency.get("queue_size")),
        continue_on_failure=workflow.get("failure_strategy") == "continue_on_failure",
        timeout_buffer=float(workflow.get("step_timeout_buffer") or 0),
        strict_errors=settings.get("error_handling") == "strict",
        batch_size=batch_size,
        priority=priority_value((template.get("task_config") or {}).get("priority")),
        leaves=leaf_steps(template),
    )


def leaf_steps(template: dict[str, Any]) -> frozenset[str]:
    """Names of the steps no step depends on, from the stored template's ``steps`` (the
    same ``depends_on`` lists its ``NamedStepEdge`` rows were made from). Empty when the
    template has no step list: then every finish runs the full statement."""
    steps = [s for s in template.get("steps") or [] if isinstance(s, dict)]
    if not steps or any("depends_on" not in s for s in steps):
        return frozenset()
    parents = {str(p) for s in steps for p in s.get("depends_on") or []}
    return frozenset(str(s["name"]) for s in steps if str(s.get("name")) not in parents)


_SIMPLE_TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}


def payload_schema(declaration: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of a declared event's payload.

    ``schema`` is a JSON Schema; ``payload_schema`` is either one or the seed's short
    form, a mapping of field name to type name (``{amount: "number"}``).
    """
    schema = declaration.get("schema") or declaration.get("payload_schema") or {}
    if not isinstance(schema, dict):
        return {}
    looks_short = (
        schema
        and all(isinstance(v, str) and v in _SIMPLE_TYPES for v in schema.values())
        and "type" not in schema
    )
    if looks_short:
        return {
            "type": "object",
            "properties": {k: {"type": v} for k, v in schema.items()},
        }
    return schema


def declared_events(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Custom events declared at top level, under ``events`` and per step."""
    sources: list[Any] = list(template.get("custom_events") or [])
    sections = template.get("sections") or {}
    sources += list((sections.get("events") or {}).get("custom_events") or [])
    for step in template.get("steps") or []:
        sources += list(step.get("custom_events") or [])
    declared = {
        str(d["name"]): payload_schema(d) for d in sources if isinstance(d, dict) and d.get("name")
    }
    # Names routed by events.step_events / workflow_events are custom events too (any payload).
    for name in routed_custom_events(template):
        declared.setdefault(name, {})
    return declared


_cache: dict[tuple[int, str], Policy] = {}
_lock = threading.Lock()


def policy_for_template(named_task_id: int) -> Policy:
    """The policy of a template revision when only its id is at hand (one query)."""
    from ..models import NamedTask

    content_hash = NamedTask.objects.values_list("content_hash", flat=True).get(pk=named_task_id)
    return policy_for(named_task_id, content_hash)


def policy_for(
    named_task_id: int, content_hash: str, template: dict[str, Any] | None = None
) -> Policy:
    """The policy of a template revision (keyed by id and content, so never stale).

    ``template`` (the revision's JSON, when the caller has it) saves the query.
    """
    key = (named_task_id, content_hash)
    policy = _cache.get(key)
    if policy is None:
        from ..models import NamedTask

        if template is None:
            template = NamedTask.objects.values_list("template", flat=True).get(pk=named_task_id)
        policy = build_policy(template)
        with _lock:
            if len(_cache) > 10_000:
                _cache.clear()
            _cache[key] = policy
    return policy


def error_type(error: dict[str, Any]) -> str:
    """``card_declined`` for code CARD_DECLINED; else the category; else the class, snake_case."""
    if error.get("error_code"):
        return str(error["error_code"]).lower()
    if error.get("error_category"):
        return str(error["error_category"]).lower()
    name = str(error.get("error_class") or "").rsplit(".", 1)[-1]
    name = re.sub(r"Error$", "", name) or name
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
