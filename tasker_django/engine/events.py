"""Task and step events: stored in ``TaskEvent`` with the change, signalled after commit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from ..models import Task, TaskEvent, WorkflowStep
from ..signals import BY_EVENT

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
    #: (NamedTask id, content hash) of the task's template: its publication toggles,
    #: routing and audit settings (engine/publication.py). None: looked up by task.
    template_ref: tuple[int, str] | None = None


def template_ref(named_task: Any) -> tuple[int, str]:
    """The ``template_ref`` of a loaded ``NamedTask`` (primes the policy cache, no query)."""
    from .policy import policy_for

    policy_for(named_task.pk, named_task.content_hash, named_task.template)
    return (named_task.pk, named_task.content_hash)


def _fill_template_refs(events: list[Event]) -> None:
    """Give events created without a ``template_ref`` their task's (one query)."""
    missing = {e.task_id for e in events if e.template_ref is None}
    if not missing:
        return
    refs = {
        pk: (named_task_id, content_hash)
        for pk, named_task_id, content_hash in Task.objects.filter(pk__in=missing).values_list(
            "pk", "named_task_id", "named_task__content_hash"
        )
    }
    for e in events:
        if e.template_ref is None:
            e.template_ref = refs.get(e.task_id)


def emit_on_commit(events: list[Event], now: datetime) -> None:
    """Insert the events (one statement) and send their signals once the transaction commits.

    Events of templates with ``security.audit_logging`` also get their audit records,
    inserted in the same transaction as the events.
    """
    if not events:
        return
    from ..security.audit import audit_records, write

    _fill_template_refs(events)
    for e in events:
        e.at = e.at or now
    rows = [
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
    audit = audit_records(events, now)
    if audit:
        with transaction.atomic():
            TaskEvent.objects.bulk_create(rows)
            write(audit)
    else:
        TaskEvent.objects.bulk_create(rows)
    to_signal = [e for e in events if e.signal]
    if to_signal:
        after_commit(lambda: send_signals(to_signal))


def after_commit(func: Callable[[], None]) -> None:
    """``transaction.on_commit(func)`` for the default database, with the common case
    (autocommit, no atomic block: run it now) first."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.in_atomic_block or not db.get_autocommit():
        db.on_commit(func)  # deferred, or the error on_commit gives outside autocommit
    else:
        func()


def send_signals(events: list[Event]) -> None:
    """Publish the events: their signals, and the sinks their template routes them to.

    A template's ``events.publish_*`` toggles and ``settings.event_publishing`` switch
    both off per event (the ``TaskEvent`` row is stored regardless).
    """
    from .publication import deliver, policy_of  # publication imports this module

    log = logger.isEnabledFor(logging.INFO)
    for e in events:
        sig = BY_EVENT.get("custom" if e.name.startswith("custom.") else e.name)
        if log:
            logger.info(
                "%s task=%s step=%s",
                e.name,
                e.task_id,
                e.step_id if e.step_id is not None else "-",
                extra={"task_id": e.task_id, "step_id": e.step_id, "event": e.name},
            )
        policy = policy_of(e)
        published = policy is None or policy.publishes(e.name)
        if sig is not None and published:
            sender = Task if e.name.startswith("task.") else WorkflowStep
            try:
                sig.send(sender=sender, event=e.payload)
            except Exception:
                logger.exception("a receiver of %s failed (task %s)", e.name, e.task_id)
        if published and policy is not None and policy.routes:
            deliver(e, policy)
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
