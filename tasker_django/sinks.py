"""Event sinks: where templates route their events (``events.step_events[].publish_to``).

``TASKER["EVENT_SINKS"]`` maps a sink name to a dotted path (or the object itself) of
a callable taking one event dict, or of a class: a class is instantiated once per
process without arguments, and its instance's ``send(event)`` (or the instance
itself) is called. Two sinks need no configuration (a setting of the same name
replaces them):

* ``audit_log`` (:class:`AuditLogSink`): an ``AuditRecord`` per event, unless the
  template's ``security.audit_logging`` already stores every event;
* ``logging`` (:class:`LoggingSink`): one log line per event on ``tasker_django.sinks``.

The event dict: ``name`` (``step.completed``, ``custom.payment_processed``),
``route`` (the template's name for it, ``step_completed``), ``kind``, ``task_id``,
``step_id``, ``step_name``, ``namespace``, ``template``, ``version``, ``actor``,
``reason``, ``payload`` (masked), ``occurred_at`` (ISO 8601) and ``audit_logged``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.core.signals import setting_changed
from django.db import transaction
from django.utils.module_loading import import_string

Sink = Callable[[dict[str, Any]], Any]

#: Sinks available without configuration.
BUILTIN_SINKS: dict[str, str] = {
    "audit_log": "tasker_django.sinks.AuditLogSink",
    "logging": "tasker_django.sinks.LoggingSink",
}

_resolved: dict[str, Sink] = {}
_lock = threading.Lock()


def sink_targets() -> dict[str, Any]:
    """Sink name -> dotted path or object: the built-ins, then ``TASKER["EVENT_SINKS"]``."""
    from .conf import tasker_settings

    configured = tasker_settings.EVENT_SINKS or {}
    if not isinstance(configured, dict):
        configured = {}
    return {**BUILTIN_SINKS, **configured}


def load_sink(target: Any) -> Sink:
    """The callable of a sink setting (imports it; a class is instantiated)."""
    obj = import_string(target) if isinstance(target, str) else target
    if isinstance(obj, type):
        obj = obj()
    send = getattr(obj, "send", None)
    if callable(send):
        return send
    if not callable(obj):
        raise TypeError(f"sink {target!r} is neither callable nor has a send() method")
    return obj


def get_sink(name: str) -> Sink | None:
    """The sink registered under ``name`` (resolved once per process), or None."""
    sink = _resolved.get(name)
    if sink is not None:
        return sink
    target = sink_targets().get(name)
    if target is None:
        return None
    sink = load_sink(target)
    with _lock:
        _resolved[name] = sink
    return sink


def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKER":
        with _lock:
            _resolved.clear()


setting_changed.connect(_reset)


class AuditLogSink:
    """Writes an ``AuditRecord`` for each event it receives.

    Events of a template with ``security.audit_logging.enabled`` are skipped
    (``audit_logged``): the audit log already holds them, written with the change.
    Records expire after ``retention_period`` of that section when it sets one.
    """

    def send(self, event: dict[str, Any]) -> None:
        from .models import AuditRecord, NamedTask
        from .security.audit import audit_settings

        if event.get("audit_logged"):
            return
        at = _parse_time(event.get("occurred_at"))
        expires = None
        template = (
            NamedTask.objects.filter(
                namespace__name=event.get("namespace") or "",
                name=event.get("template") or "",
                version=event.get("version") or "",
                is_current=True,
            )
            .values_list("template", flat=True)
            .first()
        )
        if template:
            settings, _problems = audit_settings(
                _with_audit_enabled(template)  # the retention period, even when disabled
            )
            if settings is not None and settings.retention is not None:
                expires = at + settings.retention
        with transaction.atomic():
            AuditRecord.objects.create(
                created_at=at,
                namespace=str(event.get("namespace") or "")[:128],
                template=str(event.get("template") or "")[:255],
                version=str(event.get("version") or "")[:64],
                task_id=event.get("task_id"),
                step_id=event.get("step_id"),
                step_name=str(event.get("step_name") or "")[:255],
                kind=str(event.get("kind") or "")[:16],
                event=str(event.get("name") or "")[:128],
                actor=str(event.get("actor") or "")[:255],
                reason=str(event.get("reason") or ""),
                payload=event.get("payload") or {},
                expires_at=expires,
            )


def _with_audit_enabled(template: dict[str, Any]) -> dict[str, Any]:
    sections = dict(template.get("sections") or {})
    security = dict(sections.get("security") or {})
    audit = security.get("audit_logging")
    security["audit_logging"] = {**(audit if isinstance(audit, dict) else {}), "enabled": True}
    sections["security"] = security
    return {**template, "sections": sections}


def _parse_time(value: Any) -> datetime:
    from django.utils import timezone

    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except (TypeError, ValueError):
        return timezone.now()


class LoggingSink:
    """Logs one line per event: name, ids, template and the (masked) payload as JSON."""

    #: Lines longer than this are cut (payloads can be large).
    max_length = 2000

    def __init__(self, logger_name: str = "tasker_django.sinks", level: int = logging.INFO):
        self.logger = logging.getLogger(logger_name)
        self.level = level

    def send(self, event: dict[str, Any]) -> None:
        if not self.logger.isEnabledFor(self.level):
            return
        payload = json.dumps(event.get("payload") or {}, sort_keys=True, default=str)
        line = (
            f"{event.get('name')} task={event.get('task_id')} "
            f"step={event.get('step_id') if event.get('step_id') is not None else '-'} "
            f"{event.get('namespace')}/{event.get('template')}@{event.get('version')} "
            f"payload={payload}"
        )
        if len(line) > self.max_length:
            line = line[: self.max_length - 3] + "..."
        self.logger.log(
            self.level,
            "%s",
            line,
            extra={"task_id": event.get("task_id"), "event": event.get("name")},
        )
