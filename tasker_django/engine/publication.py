"""Publication of a template's events: the ``events`` toggles, routing to sinks, audit.

Every event is stored in ``TaskEvent`` whatever the template says (the admin's
timeline). *Publication* is what leaves the transaction: the Django signal and the
sinks the template routes the event to. A template switches it per event with the
``events.publish_<event>`` toggles, and off entirely with
``settings.event_publishing: false``.

``events.step_events[]`` / ``events.workflow_events[]`` entries ``{event,
publish_to: [sink, ...]}`` route events to sinks registered in
``TASKER["EVENT_SINKS"]`` (plus the built-in ``audit_log`` and ``logging``). Sinks
get a plain dict whose payload is masked (:mod:`tasker_django.security.masking`);
they run after the transaction commits, in the process that made the change, and a
failing sink is logged and never affects the workflow.

All of this is read once per template revision into :class:`EventPolicy`, which
lives in the engine's policy cache (``policy_for(...).events``): a template that
routes nothing costs one dictionary lookup per event.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.utils import timezone

if TYPE_CHECKING:
    from ..security.audit import AuditSettings
    from .events import Event

logger = logging.getLogger("tasker_django.events")

#: Events that can be toggled and routed by name (custom events are ``custom.<name>``).
PUBLISHABLE = frozenset(
    {
        "task.started",
        "task.completed",
        "task.failed",
        "task.cancelled",
        "task.resumed",
        "step.started",
        "step.completed",
        "step.failed",
        "step.retried",
        "step.resolved",
        "step.cancelled",
        "step.escalated",
    }
)

#: The toggle of every custom event of a template.
CUSTOM_TOGGLE = "publish_custom_events"


def builtin_event(name: str) -> str | None:
    """``step_started`` -> ``step.started``, ``workflow_failed`` / ``task_failed`` ->
    ``task.failed``; ``step.started`` itself; None for any other name (a custom event)."""
    name = str(name).strip()
    if name in PUBLISHABLE:
        return name
    for prefix, kind in (("workflow_", "task."), ("task_", "task."), ("step_", "step.")):
        if name.startswith(prefix):
            candidate = kind + name[len(prefix) :]
            if candidate in PUBLISHABLE:
                return candidate
    return None


def route_target(name: str) -> str:
    """The stored event name a routing entry's ``event`` stands for."""
    return builtin_event(name) or f"custom.{str(name).strip()}"


@dataclass(frozen=True)
class EventPolicy:
    """What a template says about publishing its events and auditing its changes."""

    namespace: str = ""
    template: str = ""
    version: str = ""
    #: ``settings.event_publishing`` (False: nothing is published).
    publishing: bool = True
    #: Event names toggled off (``custom`` stands for every custom event).
    disabled: frozenset[str] = frozenset()
    #: Stored event name -> sink names, in the template's order.
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Stored event name -> the name the template's routing entry used.
    labels: Mapping[str, str] = field(default_factory=dict)
    #: ``security.audit_logging`` when enabled, else None.
    audit: AuditSettings | None = None
    #: Sensitive field names the template adds (``security.sensitive_fields``).
    sensitive: frozenset[str] = frozenset()

    def publishes(self, name: str) -> bool:
        if not self.publishing:
            return False
        return ("custom" if name.startswith("custom.") else name) not in self.disabled

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.template}@{self.version}"


#: The policy of templates that say nothing about events (shared, immutable).
DEFAULT_EVENT_POLICY = EventPolicy()


def _routing_entries(template: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(key path, entry) of every ``events.step_events`` / ``workflow_events`` entry."""
    events = (template.get("sections") or {}).get("events")
    if not isinstance(events, Mapping):
        return []
    found = []
    for key in ("step_events", "workflow_events"):
        entries = events.get(key)
        if isinstance(entries, list):
            found += [(f"events.{key}[{i}]", entry) for i, entry in enumerate(entries)]
        elif entries is not None:
            found.append((f"events.{key}", entries))
    return found


def routes_of(template: Mapping[str, Any]) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    routes: dict[str, list[str]] = {}
    labels: dict[str, str] = {}
    for _path, entry in _routing_entries(template):
        if not isinstance(entry, Mapping) or not entry.get("event"):
            continue
        sinks = entry.get("publish_to") or []
        if isinstance(sinks, str):
            sinks = [sinks]
        if not isinstance(sinks, list):
            continue
        target = route_target(str(entry["event"]))
        labels.setdefault(target, str(entry["event"]).strip())
        names = routes.setdefault(target, [])
        names += [str(s) for s in sinks if isinstance(s, str) and s and str(s) not in names]
    return {k: tuple(v) for k, v in routes.items() if v}, labels


def routed_custom_events(template: Mapping[str, Any]) -> list[str]:
    """Names routed by ``step_events`` / ``workflow_events`` that are custom events.

    They count as declared custom events (without a payload schema), so a handler
    can ``self.publish_event("payment_processed", {...})``.
    """
    routes, _labels = routes_of(template)
    return [name[len("custom.") :] for name in routes if name.startswith("custom.")]


def _toggles(template: Mapping[str, Any]) -> tuple[frozenset[str], list[tuple[str, str]]]:
    events = (template.get("sections") or {}).get("events")
    disabled: set[str] = set()
    problems: list[tuple[str, str]] = []
    if not isinstance(events, Mapping):
        return frozenset(), problems
    for key, value in events.items():
        if not str(key).startswith("publish_"):
            continue
        if key == CUSTOM_TOGGLE:
            target: str | None = "custom"
        else:
            target = builtin_event(str(key)[len("publish_") :])
        if target is None:
            known = ", ".join(sorted(toggle_names()))
            problems.append(
                (f"events.{key}", f"no event is called that, so it has no effect (known: {known})")
            )
            continue
        if not isinstance(value, bool):
            problems.append((f"events.{key}", f"must be true or false, got {value!r}; ignored"))
            continue
        if value is False:
            disabled.add(target)
    return frozenset(disabled), problems


def toggle_names() -> list[str]:
    names = [CUSTOM_TOGGLE]
    for event in PUBLISHABLE:
        kind, verb = event.split(".")
        names.append(f"publish_{kind}_{verb}")
    return sorted(names)


def _publishing(template: Mapping[str, Any]) -> tuple[bool, list[tuple[str, str]]]:
    settings = template.get("settings") or {}
    value = settings.get("event_publishing", True) if isinstance(settings, Mapping) else True
    if isinstance(value, bool):
        return value, []
    return True, [
        ("settings.event_publishing", f"must be true or false, got {value!r}; events are published")
    ]


def build_event_policy(template: Mapping[str, Any]) -> EventPolicy:
    """The event policy of a template (its ``NamedTask.template`` JSON)."""
    from ..security.audit import audit_settings
    from ..security.masking import template_fields

    publishing, _ = _publishing(template)
    disabled, _ = _toggles(template)
    routes, labels = routes_of(template)
    audit, _ = audit_settings(template)
    if publishing and not disabled and not routes and audit is None:
        return DEFAULT_EVENT_POLICY  # masking only matters for sinks and the audit log
    return EventPolicy(
        namespace=str(template.get("namespace") or ""),
        template=str(template.get("name") or ""),
        version=str(template.get("version") or ""),
        publishing=publishing,
        disabled=disabled,
        routes=routes,
        labels=labels,
        audit=audit,
        sensitive=template_fields(template),
    )


def template_problems(template: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key path, problem) of the ``events`` and ``audit_logging`` settings (W007)."""
    from ..security.audit import audit_settings

    problems = list(_publishing(template)[1]) + list(_toggles(template)[1])
    for path, entry in _routing_entries(template):
        if not isinstance(entry, Mapping):
            problems.append((path, "must be a mapping with 'event' and 'publish_to'; ignored"))
            continue
        if not entry.get("event"):
            problems.append((path, "has no 'event', so it routes nothing"))
        sinks = entry.get("publish_to")
        if isinstance(sinks, str):
            sinks = [sinks]
        if not isinstance(sinks, list) or not sinks:
            problems.append((f"{path}.publish_to", "must be a non-empty list of sink names"))
    problems += audit_settings(template)[1]
    return problems


# ---------------------------------------------------------------------------
# Publishing one event (after commit)
# ---------------------------------------------------------------------------


def policy_of(event: Event) -> EventPolicy | None:
    """The event policy of the event's template; None when the event names none."""
    ref = event.template_ref
    if ref is None:
        return None
    from .policy import policy_for

    return policy_for(*ref).events


def sink_event(event: Event, policy: EventPolicy) -> dict[str, Any]:
    """The plain dict a sink receives; the payload is masked."""
    from ..security.masking import configured_fields, mask, mask_text

    names = configured_fields() | policy.sensitive
    payload = event.payload or {}
    at = event.at or timezone.now()
    return {
        "name": event.name,
        "route": policy.labels.get(event.name, event.name),
        "kind": str(event.kind),
        "task_id": event.task_id,
        "step_id": event.step_id,
        "step_name": str(payload.get("step_name") or ""),
        "namespace": policy.namespace or str(payload.get("namespace") or ""),
        "template": policy.template or str(payload.get("task_name") or ""),
        "version": policy.version or str(payload.get("version") or ""),
        "actor": event.actor,
        "reason": mask_text(event.reason or ""),
        "payload": mask(payload, names),
        "occurred_at": at.isoformat() if isinstance(at, datetime) else str(at),
        # True when security.audit_logging already stored this event (the audit_log
        # sink then writes nothing, so no record is duplicated).
        "audit_logged": policy.audit is not None,
    }


def deliver(event: Event, policy: EventPolicy) -> int:
    """Send a published event to the sinks its template routes it to.

    Returns how many sinks took it. A sink that raises is logged with its name; the
    others still run and the workflow never notices.
    """
    from ..sinks import get_sink

    names = policy.routes.get(event.name)
    if not names:
        return 0
    data = sink_event(event, policy)
    delivered = 0
    for name in names:
        try:
            sink = get_sink(name)
            if sink is None:
                logger.warning(
                    "template %s routes %s to sink %r, which is not registered in "
                    "TASKER['EVENT_SINKS'] (task %s)",
                    policy.label,
                    event.name,
                    name,
                    event.task_id,
                )
                continue
            sink(copy.deepcopy(data))
            delivered += 1
        except Exception:
            logger.exception(
                "event sink %r failed on %s (task %s, step %s)",
                name,
                event.name,
                event.task_id,
                event.step_id if event.step_id is not None else "-",
            )
    return delivered


# ---------------------------------------------------------------------------
# System checks (W006, W007); registered in tasker_django/checks.py
# ---------------------------------------------------------------------------

SINK_HINT = (
    "Register it in TASKER['EVENT_SINKS'] (name -> dotted path of a callable or class taking "
    "the event dict), or route to a built-in sink: audit_log, logging."
)


def check_templates(rows: Any) -> list[Any]:
    """W006 (a routed sink is not registered) and W007 (events / audit_logging settings
    that have no effect) of the current templates in ``rows`` (their template JSON)."""
    from django.core.checks import Warning

    from ..sinks import sink_targets

    registered = set(sink_targets())
    messages: list[Any] = []
    for template in rows:
        if not isinstance(template, Mapping):
            continue
        label = f"{template.get('namespace')}/{template.get('name')}@{template.get('version')}"
        routes, labels = routes_of(template)
        for event, sinks in routes.items():
            for sink in sinks:
                if sink not in registered:
                    messages.append(
                        Warning(
                            f"Template {label}: event {labels.get(event, event)!r} is routed to "
                            f"sink {sink!r}, which is not registered, so that routing has no "
                            "effect.",
                            hint=SINK_HINT,
                            id="tasker_django.W006",
                        )
                    )
        for path, problem in template_problems(template):
            messages.append(
                Warning(
                    f"Template {label}: {path} {problem}.",
                    hint="See docs/events.md for the events and audit_logging keys.",
                    id="tasker_django.W007",
                )
            )
    return messages


def check_sink_settings() -> list[Any]:
    """W007: ``TASKER['EVENT_SINKS']`` is not a dict, or an entry does not load."""
    from django.core.checks import Warning

    from ..conf import tasker_settings
    from ..sinks import load_sink

    configured = tasker_settings.EVENT_SINKS
    if configured is None or configured == {}:
        return []
    if not isinstance(configured, dict):
        return [
            Warning(
                f"TASKER['EVENT_SINKS'] must be a dict of sink name -> dotted path, got "
                f"{type(configured).__name__}; no configured sink has any effect.",
                hint="For example {'monitoring': 'myapp.sinks.Monitoring'}.",
                id="tasker_django.W007",
            )
        ]
    messages: list[Any] = []
    for name, target in configured.items():
        try:
            load_sink(target)
        except Exception as exc:
            messages.append(
                Warning(
                    f"TASKER['EVENT_SINKS'][{name!r}] ({target!r}) does not load ({exc}); events "
                    "routed to it are dropped (and logged).",
                    hint="Use a dotted path to a callable taking one event dict, or to a class "
                    "whose instances are (or have a send() method).",
                    id="tasker_django.W007",
                )
            )
    return messages
