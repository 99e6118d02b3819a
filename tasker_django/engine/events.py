"""Task and step events: stored in ``TaskEvent`` with the change, signalled after commit."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction

from ..models import Task, TaskEvent, WorkflowStep

logger = logging.getLogger("tasker_django.events")


@dataclass
class Event:
    name: str
    task_id: int
    step_id: int | None
    payload: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None
    signal: bool = True
    kind: str = TaskEvent.Kind.TRANSITION
    from_status: str = ""
    to_status: str = ""
    actor: str = ""
    reason: str = ""


def emit_on_commit(events: list[Event], now: datetime) -> None:
    """Insert the events (one statement) and send their signals once the transaction commits."""
    if not events:
        return
    TaskEvent.objects.bulk_create(
        [
            TaskEvent(
                task_id=e.task_id,
                step_id=e.step_id,
                kind=e.kind,
                name=e.name,
                from_status=e.from_status,
                to_status=e.to_status,
                actor=e.actor[:255],
                reason=e.reason,
                payload=e.payload,
                created_at=e.at or now,
            )
            for e in events
        ]
    )
    to_signal = [e for e in events if e.signal]
    if to_signal:
        transaction.on_commit(lambda: send_signals(to_signal))


def send_signals(events: list[Event]) -> None:
    from ..signals import BY_EVENT

    for e in events:
        sig = BY_EVENT.get("custom" if e.name.startswith("custom.") else e.name)
        logger.info(
            "%s task=%s step=%s",
            e.name,
            e.task_id,
            e.step_id if e.step_id is not None else "-",
            extra={"task_id": e.task_id, "step_id": e.step_id, "event": e.name},
        )
        if sig is None:
            continue
        sender = Task if e.name.startswith("task.") else WorkflowStep
        try:
            sig.send(sender=sender, event=e.payload)
        except Exception:
            logger.exception("a receiver of %s failed (task %s)", e.name, e.task_id)
        if e.name == "step.escalated":
            run_escalation_action(e.payload)


def run_escalation_action(payload: dict[str, Any]) -> None:
    """Call the function ``TASKER['ESCALATION_ACTIONS']`` registers under the rule's action."""
    from django.utils.module_loading import import_string

    from ..conf import tasker_settings

    name = payload.get("action") or ""
    target = (tasker_settings.ESCALATION_ACTIONS or {}).get(name)
    if not target:
        logger.warning(
            "escalation %r of task %s step %s has no registered action",
            name,
            payload.get("task_id"),
            payload.get("step_id"),
        )
        return
    try:
        action = import_string(target) if isinstance(target, str) else target
        action(payload)
    except Exception:
        logger.exception(
            "escalation action %r failed (task %s step %s)",
            name,
            payload.get("task_id"),
            payload.get("step_id"),
        )
