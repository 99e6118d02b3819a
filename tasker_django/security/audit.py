"""The audit log: ``security.audit_logging`` of a template.

With ``enabled: true`` every ``TaskEvent`` of the template's tasks (creation, every
task and step transition, custom events, escalations and operator actions with
their actor and reason) gets an append-only :class:`~tasker_django.models.AuditRecord`,
inserted in the same transaction as the change. ``include_sensitive_data: false``
(the default) stores masked payloads and reasons; ``retention_period`` sets
``expires_at`` (``tasker_prune_audit`` deletes expired records); ``log_level`` is the
level at which each audited event is also logged on ``tasker_django.audit`` once the
transaction commits (ids, event, actor; never the payload).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction

if TYPE_CHECKING:
    from ..engine.events import Event
    from ..engine.publication import EventPolicy
    from ..models import AuditRecord

audit_logger = logging.getLogger("tasker_django.audit")

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

_DAY = 86_400.0
_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": _DAY,
    "day": _DAY,
    "days": _DAY,
    "w": 7 * _DAY,
    "week": 7 * _DAY,
    "weeks": 7 * _DAY,
    "mo": 30 * _DAY,
    "month": 30 * _DAY,
    "months": 30 * _DAY,
    "y": 365 * _DAY,
    "yr": 365 * _DAY,
    "yrs": 365 * _DAY,
    "year": 365 * _DAY,
    "years": 365 * _DAY,
}
_FOREVER = {"", "none", "forever", "never", "indefinite", "indefinitely"}
_PERIOD_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*[_\s-]?\s*([a-z]*)$")


def parse_retention(value: Any) -> timedelta | None:
    """``"7_years"``, ``"90d"``, ``"12h"``, ``"30 days"`` or seconds -> a timedelta.

    None (or ``"none"``, ``"forever"``) means keep forever. A month is 30 days, a
    year 365. Raises ValueError for anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a period")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        if text in _FOREVER:
            return None
        match = _PERIOD_RE.match(text)
        if not match or match.group(2) not in {"", *_UNITS}:
            raise ValueError(
                f"{value!r} is not a period (use seconds or a number with s, m, h, d, w, "
                "months or years, e.g. '90d' or '7_years')"
            )
        seconds = float(match.group(1)) * _UNITS.get(match.group(2), 1.0)
    if not seconds > 0:
        raise ValueError(f"{value!r} is not a positive period")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class AuditSettings:
    include_sensitive_data: bool = False
    #: None: records are kept forever.
    retention: timedelta | None = None
    log_level: int = logging.INFO


def audit_settings(
    template: Mapping[str, Any],
) -> tuple[AuditSettings | None, list[tuple[str, str]]]:
    """The template's audit settings (None when not enabled) and problems (W007)."""
    security = (template.get("sections") or {}).get("security")
    config = security.get("audit_logging") if isinstance(security, Mapping) else None
    path = "security.audit_logging"
    if config is None:
        return None, []
    if not isinstance(config, Mapping):
        return None, [(path, "must be a mapping; audit logging is off")]
    problems: list[tuple[str, str]] = []
    enabled = config.get("enabled", False)
    if not isinstance(enabled, bool):
        problems.append((f"{path}.enabled", f"must be true or false, got {enabled!r}"))
    include = config.get("include_sensitive_data", False)
    if not isinstance(include, bool):
        problems.append(
            (f"{path}.include_sensitive_data", f"must be true or false, got {include!r}; masked")
        )
        include = False
    retention = None
    try:
        retention = parse_retention(config.get("retention_period"))
    except ValueError as exc:
        problems.append((f"{path}.retention_period", f"{exc}; records are kept forever"))
    level_name = config.get("log_level", "info")
    level = LOG_LEVELS.get(str(level_name).strip().lower()) if level_name is not None else None
    if level is None:
        known = ", ".join(k for k in LOG_LEVELS if k != "warn")
        problems.append((f"{path}.log_level", f"unknown level {level_name!r} ({known}); info"))
        level = logging.INFO
    if enabled is not True:
        return None, problems
    return AuditSettings(include_sensitive_data=include, retention=retention, log_level=level), (
        problems
    )


def record_of(event: Event, policy: EventPolicy, now: datetime) -> AuditRecord:
    """The audit record of one event of an auditing template."""
    from ..models import AuditRecord
    from .masking import configured_fields, mask, mask_text

    audit = policy.audit
    assert audit is not None
    at = event.at or now
    payload = event.payload or {}
    reason = event.reason or ""
    if not audit.include_sensitive_data:
        payload = mask(payload, configured_fields() | policy.sensitive)
        reason = mask_text(reason)
    return AuditRecord(
        created_at=at,
        namespace=policy.namespace[:128],
        template=policy.template[:255],
        version=policy.version[:64],
        task_id=event.task_id,
        step_id=event.step_id,
        step_name=str((event.payload or {}).get("step_name") or "")[:255],
        kind=str(event.kind)[:16],
        event=event.name[:128],
        from_status=str(event.from_status or "")[:32],
        to_status=str(event.to_status or "")[:32],
        actor=(event.actor or "")[:255],
        reason=reason,
        payload=payload,
        expires_at=at + audit.retention if audit.retention else None,
    )


def audit_records(events: Iterable[Event], now: datetime) -> list[tuple[AuditRecord, int]]:
    """(record, log level) of the events whose template audits; cheap when none does."""
    from ..engine.publication import policy_of

    found = []
    for event in events:
        policy = policy_of(event)
        if policy is not None and policy.audit is not None:
            found.append((record_of(event, policy, now), policy.audit.log_level))
    return found


def write(records: list[tuple[AuditRecord, int]]) -> None:
    """Insert the records (one statement) in the current transaction; log them on commit."""
    from ..models import AuditRecord

    if not records:
        return
    AuditRecord.objects.bulk_create([r for r, _level in records])
    lines = [
        (
            level,
            record.event,
            record.task_id,
            record.step_id if record.step_id is not None else "-",
            f"{record.namespace}/{record.template}@{record.version}",
            record.actor or "-",
        )
        for record, level in records
    ]
    transaction.on_commit(lambda: _log(lines))


def _log(lines: list[tuple[Any, ...]]) -> None:
    for level, event, task_id, step_id, template, actor in lines:
        audit_logger.log(
            level,
            "audit %s task=%s step=%s template=%s actor=%s",
            event,
            task_id,
            step_id,
            template,
            actor,
            extra={"task_id": task_id, "event": event},
        )


def audit_events(events: Iterable[Event], now: datetime) -> int:
    """Write the audit records of ``events`` in the current transaction; returns how many."""
    records = audit_records(events, now)
    write(records)
    return len(records)


def audits(named_task_id: int, content_hash: str) -> bool:
    """Whether the template revision audits its changes (from the policy cache)."""
    from ..engine.policy import policy_for

    return policy_for(named_task_id, content_hash).events.audit is not None


def template_of(record: AuditRecord) -> dict[str, Any] | None:
    """The template JSON a record names (its newest revision), for masking it on display;
    None when that template is gone."""
    from ..models import NamedTask

    template: dict[str, Any] | None = (
        NamedTask.objects.filter(
            namespace__name=record.namespace, name=record.template, version=record.version
        )
        .order_by("-revision")
        .values_list("template", flat=True)
        .first()
    )
    return template


def prune(now: datetime, *, dry_run: bool = False, batch_size: int = 10_000) -> int:
    """Delete audit records whose ``expires_at`` has passed; returns how many."""
    from ..models import AuditRecord

    expired = AuditRecord.objects.filter(expires_at__isnull=False, expires_at__lte=now)
    if dry_run:
        return expired.count()
    deleted = 0
    while True:
        ids = list(expired.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        deleted += AuditRecord.objects.filter(pk__in=ids).delete()[0]
