"""Recording values of declared metrics (``StepHandler.record_metric``).

Each record updates the metric's cumulative :class:`~tasker_django.models.MetricSeries`
row (what Prometheus scrapes) and appends a
:class:`~tasker_django.models.MetricObservation` (what alert windows read).

Updates are atomic across worker processes: counters and gauges are one ``UPDATE``
with an ``F()`` expression (or a plain assignment), histograms update their bucket
counts under a row lock (``SELECT ... FOR UPDATE``; SQLite serialises writers).
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_left
from collections.abc import Mapping
from decimal import Decimal
from numbers import Real
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F

from ..engine import clock
from ..models import MetricObservation, MetricSeries
from .declarations import COUNTER, GAUGE, HISTOGRAM, MetricDecl, monitoring_for

#: Label names a handler may use (Prometheus rules; namespace/template/le are taken).
LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_LABELS = frozenset({"namespace", "template", "le"})
MAX_LABELS_KEY = 512


class MetricError(ValueError):
    """A value that cannot be recorded; ``code`` is the handler error code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def check_value(decl: MetricDecl, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real | Decimal):
        raise MetricError(
            f"metric {decl.name!r}: value {value!r} is not a number", "INVALID_METRIC_VALUE"
        )
    number = float(value)
    if not math.isfinite(number):
        raise MetricError(
            f"metric {decl.name!r}: value {value!r} is not finite", "INVALID_METRIC_VALUE"
        )
    if decl.kind == COUNTER and number < 0:
        raise MetricError(
            f"counter {decl.name!r} only goes up: cannot add {value!r}", "INVALID_METRIC_VALUE"
        )
    return number


def labels_key(decl: MetricDecl, labels: Mapping[str, Any] | None) -> tuple[dict[str, str], str]:
    """Labels as strings and their canonical JSON (part of the series' identity)."""
    if labels is None:
        return {}, "{}"
    if not isinstance(labels, Mapping):
        raise MetricError(
            f"metric {decl.name!r}: labels must be a dict of name to value",
            "INVALID_METRIC_LABELS",
        )
    clean: dict[str, str] = {}
    for key, value in labels.items():
        if (
            not isinstance(key, str)
            or not LABEL_NAME.match(key)
            or key.startswith("__")
            or key in RESERVED_LABELS
        ):
            raise MetricError(
                f"metric {decl.name!r}: {key!r} is not a usable label name "
                f"(letters, digits and _; not {', '.join(sorted(RESERVED_LABELS))})",
                "INVALID_METRIC_LABELS",
            )
        if value is None or isinstance(value, dict | list):
            raise MetricError(
                f"metric {decl.name!r}: label {key!r} needs a string or number value",
                "INVALID_METRIC_LABELS",
            )
        clean[key] = str(value)
    key_text = json.dumps(clean, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if len(key_text) > MAX_LABELS_KEY:
        raise MetricError(
            f"metric {decl.name!r}: labels are longer than {MAX_LABELS_KEY} characters",
            "INVALID_METRIC_LABELS",
        )
    return clean, key_text


def _series(
    namespace: str, template: str, decl: MetricDecl, labels: dict[str, str], key: str
) -> int:
    """The id of the series row, created at its zero state when missing."""
    lookup = {"namespace": namespace, "template": template, "name": decl.name, "labels_key": key}
    pk = MetricSeries.objects.filter(**lookup).values_list("pk", flat=True).first()
    if pk is not None:
        return pk
    try:
        with transaction.atomic():
            return MetricSeries.objects.create(
                **lookup,
                kind=decl.kind,
                description=decl.description,
                labels=labels,
                buckets=list(decl.buckets),
                bucket_counts=[0] * len(decl.buckets),
                updated_at=clock.now(),
            ).pk
    except IntegrityError:  # another process created it first
        return MetricSeries.objects.filter(**lookup).values_list("pk", flat=True).get()


def _locked_update(pk: int, decl: MetricDecl, value: float) -> None:
    """Histograms, and any series whose declaration changed: under a row lock."""
    with transaction.atomic():
        row = MetricSeries.objects.select_for_update().get(pk=pk)
        if row.kind != decl.kind or (decl.kind == HISTOGRAM and row.buckets != list(decl.buckets)):
            # The template now declares it differently: the series starts again.
            row.kind, row.value, row.count, row.sum = decl.kind, 0.0, 0, 0.0
            row.buckets = list(decl.buckets)
            row.bucket_counts = [0] * len(decl.buckets)
        if decl.kind == COUNTER:
            row.value += value
        elif decl.kind == GAUGE:
            row.value = value
        else:
            counts = list(row.bucket_counts or [0] * len(decl.buckets))
            index = bisect_left(decl.buckets, value)  # first bound >= value
            if index < len(counts):
                counts[index] += 1
            row.bucket_counts = counts
            row.count += 1
            row.sum += value
            row.value = value
        row.description = decl.description
        row.updated_at = clock.now()
        row.save()


def record(
    namespace: str,
    template: str,
    decl: MetricDecl,
    value: Any,
    labels: Mapping[str, Any] | None = None,
) -> float:
    """Record ``value`` for a declared metric of a template; returns it as a float."""
    number = check_value(decl, value)
    clean, key = labels_key(decl, labels)
    pk = _series(namespace, template, decl, clean, key)
    now = clock.now()
    updated = 0
    if decl.kind == COUNTER:
        updated = MetricSeries.objects.filter(pk=pk, kind=COUNTER).update(
            value=F("value") + number, updated_at=now
        )
    elif decl.kind == GAUGE:
        updated = MetricSeries.objects.filter(pk=pk, kind=GAUGE).update(
            value=number, updated_at=now
        )
    if not updated:
        _locked_update(pk, decl, number)
    MetricObservation.objects.create(
        namespace=namespace, template=template, name=decl.name, value=number, recorded_at=now
    )
    return number


def record_for_step(
    loaded: Any,
    name: str,
    value: Any,
    labels: Mapping[str, Any] | None = None,
    required: bool = True,
) -> bool:
    """``StepHandler.record_metric`` for the step the engine is running.

    An undeclared name (unless ``required=False``: then nothing is recorded and the
    answer is False) or a bad value raises :class:`PermanentError`: retrying the step
    would not fix it.
    """
    from ..handlers.errors import PermanentError

    declared = monitoring_for(loaded.step["named_task_id"], loaded.step["template_hash"]).metrics
    decl = declared.get(name) if isinstance(name, str) else None
    if decl is None:
        if not required:
            return False
        known = ", ".join(sorted(declared)) or "none"
        raise PermanentError(
            f"metric {name!r} is not declared in the template's monitoring.metrics "
            f"(declared: {known})",
            error_code="UNDECLARED_METRIC",
            error_category="configuration",
        )
    try:
        record(loaded.task["namespace"], loaded.task["name"], decl, value, labels)
    except MetricError as exc:
        raise PermanentError(
            str(exc), error_code=exc.code, error_category="configuration"
        ) from None
    return True
