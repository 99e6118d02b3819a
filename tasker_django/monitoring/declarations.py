"""What templates declare under ``monitoring``: metrics and alerts.

``monitoring.metrics[]``: ``name`` (letters, digits, ``_``; not starting with a digit),
``type`` (``counter``, ``gauge`` or ``histogram``), ``description``, ``buckets``
(histograms: increasing upper bounds; Prometheus' default buckets when absent).
``monitoring.alerts[]``: ``name``, ``condition`` (see :mod:`tasker_django.expressions`),
``severity`` (default ``warning``), ``description``.

Metrics and alerts belong to a template *name* (namespace and name, all versions):
the series and alerts are keyed that way. When several versions are current, the
declarations are merged and the newest version wins for a name declared twice.
Entries that cannot be used are skipped and reported by system check W009.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..expressions import Condition, ExpressionError, compile_condition

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"
KINDS = (COUNTER, GAUGE, HISTOGRAM)

#: A declared metric's name: usable in Prometheus names and in alert conditions.
METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: prometheus_client's default histogram buckets (seconds).
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: Prefix of every exported template metric: ``tasker_template_<name>``.
PREFIX = "tasker_template_"
DEFAULT_SEVERITY = "warning"


@dataclass(frozen=True)
class MetricDecl:
    name: str
    kind: str
    description: str = ""
    buckets: tuple[float, ...] = ()

    @property
    def family(self) -> str:
        """The Prometheus metric family name (counters: without ``_total``)."""
        return family_name(self.name, self.kind)


@dataclass(frozen=True)
class AlertDecl:
    name: str
    condition_text: str
    condition: Condition | None
    severity: str = DEFAULT_SEVERITY
    description: str = ""
    #: Why the condition cannot be used (None when it compiled).
    error: str | None = None


@dataclass(frozen=True)
class Monitoring:
    metrics: dict[str, MetricDecl] = field(default_factory=dict)
    alerts: dict[str, AlertDecl] = field(default_factory=dict)
    #: Problems with entries that were skipped, as ``(key path, message)``.
    problems: tuple[tuple[str, str], ...] = ()


def family_name(name: str, kind: str) -> str:
    family = PREFIX + name
    if kind == COUNTER and family.endswith("_total"):
        family = family[: -len("_total")]
    return family


def _buckets(raw: Any, path: str, problems: list[tuple[str, str]]) -> tuple[float, ...] | None:
    if raw is None:
        return DEFAULT_BUCKETS
    ok = isinstance(raw, list) and bool(raw)
    values: list[float] = []
    if ok:
        for item in raw:
            if (
                isinstance(item, bool)
                or not isinstance(item, int | float)
                or not math.isfinite(item)
            ):
                ok = False
                break
            values.append(float(item))
    if ok and any(b >= a for a, b in zip(values[1:], values, strict=False)):
        ok = False
    if not ok:
        problems.append((f"{path}.buckets", "must be a non-empty list of increasing numbers"))
        return None
    return tuple(values)


def parse_monitoring(template: Mapping[str, Any] | None) -> Monitoring:
    """The usable declarations of one template (the stored, normalised JSON)."""
    sections = (template or {}).get("sections") or {}
    section = sections.get("monitoring") if isinstance(sections, dict) else None
    return parse_section(section)


def parse_section(section: Any) -> Monitoring:
    """Parse a ``monitoring`` mapping; skipped entries become problems."""
    problems: list[tuple[str, str]] = []
    metrics: dict[str, MetricDecl] = {}
    alerts: dict[str, AlertDecl] = {}
    if section is None:
        return Monitoring()
    if not isinstance(section, dict):
        return Monitoring(problems=(("monitoring", "must be a mapping"),))
    raw_metrics = section.get("metrics") or []
    if not isinstance(raw_metrics, list):
        problems.append(("monitoring.metrics", "must be a list"))
        raw_metrics = []
    for i, item in enumerate(raw_metrics):
        path = f"monitoring.metrics[{i}]"
        if not isinstance(item, dict):
            problems.append((path, "must be a mapping"))
            continue
        name = item.get("name")
        if not isinstance(name, str) or not METRIC_NAME.match(name):
            problems.append(
                (
                    f"{path}.name",
                    f"{name!r} is not a metric name (letters, digits and _, "
                    "not starting with a digit)",
                )
            )
            continue
        kind = str(item.get("type") or "").strip().lower()
        if kind not in KINDS:
            problems.append(
                (f"{path}.type", f"metric {name!r}: type must be counter, gauge or histogram")
            )
            continue
        if name in metrics:
            problems.append((f"{path}.name", f"metric {name!r} is declared twice"))
            continue
        buckets: tuple[float, ...] = ()
        if kind == HISTOGRAM:
            parsed = _buckets(item.get("buckets"), path, problems)
            if parsed is None:
                continue
            buckets = parsed
        metrics[name] = MetricDecl(
            name=name,
            kind=kind,
            description=str(item.get("description") or ""),
            buckets=buckets,
        )
    raw_alerts = section.get("alerts") or []
    if not isinstance(raw_alerts, list):
        problems.append(("monitoring.alerts", "must be a list"))
        raw_alerts = []
    for i, item in enumerate(raw_alerts):
        path = f"monitoring.alerts[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append((path, "must be a mapping with a name"))
            continue
        name = item["name"]
        if name in alerts:
            problems.append((f"{path}.name", f"alert {name!r} is declared twice"))
            continue
        text = item.get("condition")
        condition: Condition | None = None
        error: str | None = None
        try:
            condition = compile_condition(text)
        except ExpressionError as exc:
            error = str(exc)
            problems.append((f"{path}.condition", error))
        alerts[name] = AlertDecl(
            name=name,
            condition_text=str(text or ""),
            condition=condition,
            severity=str(item.get("severity") or DEFAULT_SEVERITY),
            description=str(item.get("description") or ""),
            error=error,
        )
    return Monitoring(metrics=metrics, alerts=alerts, problems=tuple(problems))


_cache: dict[tuple[int, str], Monitoring] = {}
_lock = threading.Lock()


def monitoring_for(named_task_id: int, content_hash: str) -> Monitoring:
    """The declarations of one template revision, cached by id and content (never stale)."""
    key = (named_task_id, content_hash)
    found = _cache.get(key)
    if found is None:
        from ..models import NamedTask

        section = (
            NamedTask.objects.filter(pk=named_task_id)
            .values_list("template__sections__monitoring", flat=True)
            .first()
        )
        found = parse_section(section)
        with _lock:
            if len(_cache) > 10_000:
                _cache.clear()
            _cache[key] = found
    return found


@dataclass
class TemplateMonitoring:
    """The merged declarations of a template name's current versions."""

    namespace: str
    template: str
    #: The newest current version (alerts link to it).
    named_task_id: int
    version: str
    versions: list[str] = field(default_factory=list)
    metrics: dict[str, MetricDecl] = field(default_factory=dict)
    alerts: dict[str, AlertDecl] = field(default_factory=dict)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (version, path, msg)
    step_names: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.template}"


def current_templates(
    namespace: str | None = None, template: str | None = None, *, using: str | None = None
) -> list[TemplateMonitoring]:
    """Every current template name with its merged monitoring declarations (two queries)."""
    from ..definitions import version_key
    from ..models import NamedStep, NamedTask

    rows = NamedTask.objects.filter(is_current=True)
    if using:
        rows = rows.using(using)
    if namespace is not None:
        rows = rows.filter(namespace__name=namespace)
    if template is not None:
        rows = rows.filter(name=template)
    found = list(
        rows.values_list(
            "pk", "namespace__name", "name", "version", "template__sections__monitoring"
        ).order_by()
    )
    steps = NamedStep.objects.filter(named_task_id__in=[r[0] for r in found])
    if using:
        steps = steps.using(using)
    step_names: dict[int, list[str]] = {}
    for named_task_id, step in steps.values_list("named_task_id", "name"):
        step_names.setdefault(named_task_id, []).append(step)
    found.sort(key=lambda r: (r[1], r[2], version_key(r[3])))
    result: dict[tuple[str, str], TemplateMonitoring] = {}
    for pk, ns, name, version, section in found:
        entry = result.get((ns, name))
        if entry is None:
            entry = result[(ns, name)] = TemplateMonitoring(ns, name, pk, version)
        entry.named_task_id, entry.version = pk, version  # oldest to newest: newest wins
        entry.versions.append(version)
        parsed = parse_section(section)
        entry.metrics.update(parsed.metrics)
        entry.alerts.update(parsed.alerts)
        entry.problems += [(version, path, msg) for path, msg in parsed.problems]
        entry.step_names.update(step_names.get(pk, ()))
    return list(result.values())
