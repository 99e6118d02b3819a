"""Declared template metrics on the Prometheus endpoint (next to the built-in ones).

Every metric a current template declares in ``monitoring.metrics`` is one family
``tasker_template_<name>`` with the labels ``namespace`` and ``template`` (plus the
labels handlers passed to ``record_metric``):

* counter: ``tasker_template_<name>_total`` (a declared name ending in ``_total``
  keeps one ``_total``); 0 until something is recorded;
* gauge: ``tasker_template_<name>``, the last value set; no sample until set;
* histogram: ``_bucket{le=...}`` (the declared buckets, cumulative, and ``+Inf``),
  ``_sum`` and ``_count``; zeros until something is observed.

Two templates may declare the same name; if they give it different types, the
first template (by namespace and name) decides the family's type and the other's
series are left out (system check W009 says so).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ..models import MetricSeries
from .declarations import COUNTER, GAUGE, HISTOGRAM, MetricDecl, current_templates


def _bound(value: float) -> str:
    return repr(float(value))


def _add(family: Metric, decl: MetricDecl, labels: dict[str, str], row: Any | None) -> None:
    if row is not None and (
        row.kind != decl.kind or (decl.kind == HISTOGRAM and row.buckets != list(decl.buckets))
    ):
        row = None  # recorded under an older declaration: the series starts again
    name = family.name
    if decl.kind == COUNTER:
        family.add_sample(f"{name}_total", labels, row.value if row is not None else 0.0)
    elif decl.kind == GAUGE:
        if row is not None:
            family.add_sample(name, labels, row.value)
    else:
        counts = list(row.bucket_counts) if row is not None else [0] * len(decl.buckets)
        running = 0
        for bound, count in zip(decl.buckets, counts, strict=False):
            running += int(count)
            family.add_sample(f"{name}_bucket", {**labels, "le": _bound(bound)}, running)
        total = row.count if row is not None else 0
        family.add_sample(f"{name}_bucket", {**labels, "le": "+Inf"}, total)
        family.add_sample(f"{name}_count", labels, total)
        family.add_sample(f"{name}_sum", labels, row.sum if row is not None else 0.0)


class TemplateMetricsCollector(Collector):
    """Declared metrics of current templates with their recorded series (two queries + one)."""

    def collect(self) -> Iterator[Metric]:
        templates = current_templates()
        declared = {
            (t.namespace, t.template, name): decl
            for t in templates
            for name, decl in t.metrics.items()
        }
        if not declared:
            return
        series: dict[tuple[str, str, str], list[Any]] = {}
        rows = MetricSeries.objects.filter(
            name__in={name for _ns, _t, name in declared},
            template__in={t for _ns, t, _name in declared},
        ).order_by("namespace", "template", "name", "labels_key")
        for row in rows:
            key = (row.namespace, row.template, row.name)
            if key in declared:
                series.setdefault(key, []).append(row)
        families: dict[str, tuple[Metric, str]] = {}
        for (namespace, template, _name), decl in sorted(declared.items()):
            entry = families.get(decl.family)
            if entry is None:
                doc = decl.description or f"Template metric {decl.name} (monitoring.metrics)."
                entry = families[decl.family] = (Metric(decl.family, doc, decl.kind), decl.kind)
            family, kind = entry
            if kind != decl.kind:
                continue  # the same name with another type: reported by W009
            base = {"namespace": namespace, "template": template}
            recorded = series.get((namespace, template, decl.name), [])
            if not recorded:
                _add(family, decl, base, None)
            for row in recorded:
                labels = {str(k): str(v) for k, v in (row.labels or {}).items()}
                _add(family, decl, {**labels, **base}, row)
        for family, _kind in families.values():
            yield family
