"""System checks of the monitoring section (registered in ``tasker_django.checks``).

* W008: an alert condition names a metric that is neither declared in the
  template's ``monitoring.metrics``, nor built in, nor ``<step>_<suffix>`` of one of
  its steps: the alert can never fire.
* W009: monitoring configuration that cannot work as written: a metric declaration
  that is skipped (bad name, unknown type, bad buckets, declared twice), an alert
  whose condition does not compile, a metric name given different types by two
  templates (only the first is exported), an ``ALERT_*`` setting that is not a
  positive number of seconds.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Warning
from django.db import DatabaseError

from .values import known_names


def _w009(message: str, hint: str) -> Any:
    return Warning(message, hint=hint, id="tasker_django.W009")


def settings_messages() -> list[Any]:
    """W009 for the ``ALERT_*`` settings."""
    raw = getattr(settings, "TASKER", None)
    if not isinstance(raw, dict):
        return []
    messages = []
    for key in ("ALERT_WINDOW", "ALERT_INTERVAL"):
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            messages.append(
                _w009(
                    f"TASKER[{key!r}] must be a positive number of seconds, got {value!r}; "
                    "the default is used.",
                    hint="ALERT_WINDOW defaults to 300, ALERT_INTERVAL to 60.",
                )
            )
    if "ALERT_SCHEDULE" in raw and not isinstance(raw["ALERT_SCHEDULE"], bool):
        messages.append(
            _w009(
                f"TASKER['ALERT_SCHEDULE'] must be True or False, got {raw['ALERT_SCHEDULE']!r}.",
                hint="True makes tasker_worker install the alert schedule when it starts.",
            )
        )
    return messages


def template_messages(databases: Any) -> list[Any]:
    """W008 and W009 for the current templates (two queries per database)."""
    from .declarations import current_templates

    messages: list[Any] = []
    for alias in databases or ():
        try:
            templates = current_templates(using=alias)
        except DatabaseError:
            continue  # not migrated yet
        kinds: dict[str, tuple[str, str]] = {}
        for t in sorted(templates, key=lambda t: (t.namespace, t.template)):
            for version, path, problem in t.problems:
                messages.append(
                    _w009(
                        f"Template {t.label}@{version}: {path}: {problem}; it has no effect.",
                        hint="Fix the monitoring section and load the template again.",
                    )
                )
            for name, decl in sorted(t.metrics.items()):
                first = kinds.setdefault(decl.family, (decl.kind, t.label))
                if first[0] != decl.kind:
                    messages.append(
                        _w009(
                            f"Template {t.label}: metric {name!r} is a {decl.kind}, but "
                            f"{first[1]} declares it as a {first[0]}; only the {first[0]} "
                            "is exported.",
                            hint="Give the metric another name in one of the templates.",
                        )
                    )
            known = known_names(t.step_names, t.metrics)
            for alert in t.alerts.values():
                if alert.condition is None:
                    continue
                for name in sorted(alert.condition.names - known):
                    messages.append(
                        Warning(
                            f"Template {t.label}: alert {alert.name!r} uses {name!r}, which "
                            "is neither a declared metric, nor a built-in metric, nor "
                            "<step>_success_rate/_error_rate/_duration/_attempts/_retries "
                            "of one of its steps; the alert never fires.",
                            hint="Declare it in monitoring.metrics, or use a built-in "
                            "(see docs/monitoring.md).",
                            id="tasker_django.W008",
                        )
                    )
    return messages
