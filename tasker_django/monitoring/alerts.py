"""Evaluating ``monitoring.alerts`` (``tasker_evaluate_alerts`` and its django-q2 schedule).

For every current template (namespace and name; the newest current version's
declaration wins) and each of its alerts, the condition is evaluated over the
window's values (:mod:`.values`):

* true, and not firing: an :class:`~tasker_django.models.Alert` row is created
  (severity, description, condition, the values seen); ``alert_fired`` is sent
  after the commit and a WARNING line is logged;
* true, already firing: the same row is kept (``last_evaluated_at`` and ``values``
  updated) - one firing row per template and alert;
* false, firing: the row is resolved (``status``, ``resolved_at``);
  ``alert_resolved`` is sent after the commit and an INFO line is logged;
* a name the condition uses has no value in the window ("no data"): nothing
  changes - a firing alert stays firing (``last_evaluated_at`` is updated), a
  quiet one does not fire;
* firing alerts whose template or alert is no longer declared are resolved.

The same run deletes ``MetricObservation`` rows older than twice the largest
window in use (the run's and ``TASKER["ALERT_WINDOW"]``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction

from ..conf import tasker_settings
from ..engine import clock
from ..models import Alert, AlertStatus, MetricObservation
from .declarations import AlertDecl, TemplateMonitoring, current_templates
from .values import window_values

logger = logging.getLogger("tasker_django.alerts")

#: ``Schedule.name`` of the django-q2 schedule ``tasker_install_schedules`` manages.
SCHEDULE_NAME = "tasker_evaluate_alerts"
SCHEDULE_FUNC = "tasker_django.monitoring.alerts.scheduled_evaluation"

FIRED = "fired"
FIRING = "firing"
RESOLVED = "resolved"
OK = "ok"
NO_DATA = "no data"
INVALID = "invalid"


@dataclass
class AlertResult:
    namespace: str
    template: str
    name: str
    severity: str
    outcome: str
    values: dict[str, Any] = field(default_factory=dict)
    alert: Alert | None = None
    message: str = ""


@dataclass
class EvaluationReport:
    results: list[AlertResult] = field(default_factory=list)
    pruned: int = 0
    window: float = 0.0

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    def summary(self) -> str:
        firing = self.count(FIRED) + self.count(FIRING)
        return (
            f"{len(self.results)} alert(s) evaluated over {self.window:g} s: "
            f"{self.count(FIRED)} fired, {firing} firing, {self.count(RESOLVED)} resolved, "
            f"{self.count(NO_DATA)} without data; {self.pruned} old observation(s) pruned"
        )


def setting_seconds(name: str) -> float:
    """``TASKER[name]`` as positive seconds (the default when invalid; W009 reports it)."""
    from ..conf import DEFAULTS

    value = getattr(tasker_settings, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        return float(DEFAULTS[name])
    return float(value)


def _event(alert: Alert) -> dict[str, Any]:
    return {
        "alert_id": alert.pk,
        "namespace": alert.namespace,
        "template": alert.template,
        "name": alert.name,
        "severity": alert.severity,
        "description": alert.description,
        "condition": alert.condition,
        "status": alert.status,
        "values": alert.values,
        "fired_at": alert.fired_at.isoformat() if alert.fired_at else None,
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
    }


def _send(signal_name: str, alert: Alert) -> None:
    from .. import signals

    signal = getattr(signals, signal_name)
    for _receiver, answer in signal.send_robust(sender=Alert, alert=alert, event=_event(alert)):
        if isinstance(answer, Exception):
            logger.error(
                "a receiver of %s failed (alert %s)", signal_name, alert.pk, exc_info=answer
            )


def _fire(t: TemplateMonitoring, decl: AlertDecl, values: dict[str, Any], now: datetime) -> Alert:
    alert = Alert.objects.create(
        namespace=t.namespace,
        template=t.template,
        named_task_id=t.named_task_id,
        name=decl.name,
        severity=decl.severity,
        description=decl.description,
        condition=decl.condition_text,
        status=AlertStatus.FIRING,
        values=values,
        fired_at=now,
        last_evaluated_at=now,
    )
    logger.warning(
        "alert fired: %s %s/%s (%s) %s; values %s",
        alert.severity,
        alert.namespace,
        alert.template,
        alert.name,
        alert.condition,
        values,
        extra={"alert": alert.name, "namespace": alert.namespace, "template": alert.template},
    )
    transaction.on_commit(lambda: _send("alert_fired", alert))
    return alert


def _resolve(alert: Alert, values: dict[str, Any], now: datetime, why: str = "") -> None:
    alert.status = AlertStatus.RESOLVED
    alert.resolved_at = now
    alert.last_evaluated_at = now
    alert.values = values
    alert.save(update_fields=["status", "resolved_at", "last_evaluated_at", "values"])
    logger.info(
        "alert resolved: %s %s/%s (%s)%s",
        alert.severity,
        alert.namespace,
        alert.template,
        alert.name,
        f" {why}" if why else "",
        extra={"alert": alert.name, "namespace": alert.namespace, "template": alert.template},
    )
    transaction.on_commit(lambda: _send("alert_resolved", alert))


def _evaluate_one(
    t: TemplateMonitoring, decl: AlertDecl, values: dict[str, Any], now: datetime
) -> AlertResult:
    result = AlertResult(t.namespace, t.template, decl.name, decl.severity, OK)
    if decl.condition is None:
        result.outcome, result.message = INVALID, decl.error or "invalid condition"
        return result
    seen = {name: values.get(name) for name in sorted(decl.condition.names)}
    result.values = seen
    with transaction.atomic():
        firing = (
            Alert.objects.select_for_update()
            .filter(namespace=t.namespace, template=t.template, name=decl.name)
            .filter(status=AlertStatus.FIRING)
            .first()
        )
        result.alert = firing
        missing = [name for name, value in seen.items() if value is None]
        if missing:
            result.outcome = NO_DATA
            result.message = "no data for " + ", ".join(missing)
            if firing is not None:
                firing.last_evaluated_at = now
                firing.save(update_fields=["last_evaluated_at"])
            return result
        if decl.condition.evaluate(seen):
            if firing is not None:
                firing.last_evaluated_at = now
                firing.values = seen
                firing.save(update_fields=["last_evaluated_at", "values"])
                result.outcome = FIRING
                return result
            try:
                with transaction.atomic():
                    result.alert = _fire(t, decl, seen, now)
                result.outcome = FIRED
            except IntegrityError:  # a concurrent run fired it first
                result.outcome = FIRING
            return result
        if firing is not None:
            _resolve(firing, seen, now)
            result.outcome = RESOLVED
    return result


def _resolve_undeclared(
    templates: list[TemplateMonitoring],
    now: datetime,
    namespace: str | None,
    template: str | None,
) -> list[AlertResult]:
    declared = {(t.namespace, t.template, name) for t in templates for name in t.alerts}
    firing = Alert.objects.filter(status=AlertStatus.FIRING)
    if namespace is not None:
        firing = firing.filter(namespace=namespace)
    if template is not None:
        firing = firing.filter(template=template)
    results = []
    for alert in firing:
        if (alert.namespace, alert.template, alert.name) in declared:
            continue
        with transaction.atomic():
            _resolve(alert, alert.values, now, why="(no longer declared)")
        results.append(
            AlertResult(
                alert.namespace,
                alert.template,
                alert.name,
                alert.severity,
                RESOLVED,
                alert.values,
                alert,
                "no longer declared",
            )
        )
    return results


def prune_observations(now: datetime, window: float) -> int:
    """Delete observations older than twice the largest window in use."""
    keep = 2 * max(window, setting_seconds("ALERT_WINDOW"))
    deleted, _ = MetricObservation.objects.filter(
        recorded_at__lt=now - timedelta(seconds=keep)
    ).delete()
    return deleted


def evaluate_alerts(
    window: float | None = None,
    namespace: str | None = None,
    template: str | None = None,
    now: datetime | None = None,
    prune: bool = True,
) -> EvaluationReport:
    """Evaluate the alerts of every current template (or one namespace / template)."""
    window = float(window) if window is not None else setting_seconds("ALERT_WINDOW")
    if not math.isfinite(window) or window <= 0:
        raise ValueError("the window must be a positive number of seconds")
    now = now or clock.now()
    report = EvaluationReport(window=window)
    templates = current_templates(namespace, template)
    for t in sorted(templates, key=lambda t: (t.namespace, t.template)):
        if not t.alerts:
            continue
        names = {n for a in t.alerts.values() if a.condition is not None for n in a.condition.names}
        values = window_values(t.namespace, t.template, t.metrics, window, now, names)
        for decl in t.alerts.values():
            try:
                report.results.append(_evaluate_one(t, decl, values, now))
            except Exception as exc:  # one broken alert must not stop the others
                logger.exception("alert %s of %s failed to evaluate", decl.name, t.label)
                report.results.append(
                    AlertResult(
                        t.namespace, t.template, decl.name, decl.severity, INVALID, message=str(exc)
                    )
                )
    report.results += _resolve_undeclared(templates, now, namespace, template)
    if prune:
        report.pruned = prune_observations(now, window)
    return report


def scheduled_evaluation() -> str:
    """What the django-q2 schedule runs: evaluate with ``TASKER["ALERT_WINDOW"]``."""
    report = evaluate_alerts()
    logger.info("scheduled alert evaluation: %s", report.summary())
    return report.summary()


def schedule_minutes() -> int:
    """``TASKER["ALERT_INTERVAL"]`` in whole minutes (django-q2's resolution), at least 1."""
    return max(1, math.ceil(setting_seconds("ALERT_INTERVAL") / 60))


def install_schedule() -> tuple[Any, str]:
    """Create or update the django-q2 schedule of the alert evaluation (idempotent).

    Returns the ``Schedule`` and ``"created"``, ``"updated"`` or ``"unchanged"``.
    """
    from django_q.models import Schedule

    wanted = {
        "func": SCHEDULE_FUNC,
        "schedule_type": Schedule.MINUTES,
        "minutes": schedule_minutes(),
        "repeats": -1,
    }
    with transaction.atomic():
        found = list(Schedule.objects.select_for_update().filter(name=SCHEDULE_NAME).order_by("pk"))
        if not found:
            return Schedule.objects.create(name=SCHEDULE_NAME, **wanted), "created"
        schedule, extra = found[0], found[1:]
        for duplicate in extra:
            duplicate.delete()
        changed = [k for k, v in wanted.items() if getattr(schedule, k) != v]
        if not changed and not extra:
            return schedule, "unchanged"
        for key in changed:
            setattr(schedule, key, wanted[key])
        schedule.save()
        return schedule, "updated"


def remove_schedule() -> int:
    from django_q.models import Schedule

    deleted, _ = Schedule.objects.filter(name=SCHEDULE_NAME).delete()
    return deleted
