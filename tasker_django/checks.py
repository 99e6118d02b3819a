"""System checks: ``tasker_django.E…`` errors and ``tasker_django.W…`` warnings.

| id   | what |
|------|------|
| E001 | ``TASKER`` is not a dict |
| E002 | a ``TASKER`` value has the wrong type or range |
| E003 | ``TASKER['HANDLERS']`` / ``HANDLERS_FILE`` has a bad entry |
| E010 | a template encrypts but ``ENCRYPTION_KEYS`` is empty or malformed |
| W001 | unknown ``TASKER`` key (typo?) |
| W002 | a ``TASKER['TEMPLATE_DIRS']`` entry is not a directory |
| W003 | a loaded template names a handler that no longer resolves |
| W004 | django-q2's ``timeout``/``retry`` do not leave room for step timeouts |
| W005 | a loaded template's escalation rule names an unregistered action |
| W006 | a loaded template routes events to a sink ``TASKER['EVENT_SINKS']`` lacks |
| W007 | ``events`` / ``audit_logging`` settings (or ``EVENT_SINKS``) that have no effect |
| W008 | a loaded template's alert condition names a metric it neither declares nor has |
| W009 | a ``monitoring`` section or ``ALERT_*`` setting that cannot work as written |
| W010 | ``security.encryption.key_rotation_interval`` cannot be checked or is overdue |
| W011 | a ``security`` key that has no effect or an unsupported value |
| W012 | a loaded template's ``testing`` section names an unknown mock or step |
| W013 | a loaded template has a key that has no effect (or that tasker does not know) |
| W014 | a template's ``database_pool`` / ``caching`` ask for what settings lack |
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError

from .conf import DEFAULTS


def _tasker() -> Any:
    return getattr(settings, "TASKER", {})


def current_templates(databases: Any) -> list[dict[str, Any]]:
    """The template JSON of every current revision in ``databases`` (database checks).

    A database that is not migrated yet gives nothing: ``migrate`` runs the checks
    before it creates the tables.
    """
    from .models import NamedTask

    templates: list[dict[str, Any]] = []
    for alias in databases or ():
        try:
            rows = (
                NamedTask.objects.using(alias)
                .filter(is_current=True)
                .order_by("namespace__name", "name", "version")
                .values_list("template", flat=True)
            )
            templates.extend(t for t in rows if isinstance(t, dict))
        except DatabaseError:
            continue
    return templates


def template_label(template: dict[str, Any]) -> str:
    return f"{template.get('namespace')}/{template.get('name')}@{template.get('version')}"


@register("tasker_django")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    raw = _tasker()
    if raw is None:
        return []
    if not isinstance(raw, dict):
        return [
            Error(
                "TASKER must be a dict.",
                hint="Set TASKER = {...} in your settings (see the tasker-django README).",
                id="tasker_django.E001",
            )
        ]
    messages: list[Any] = []
    for key in raw:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), DEFAULTS, n=1)
            messages.append(
                Warning(
                    f"Unknown TASKER setting {key!r}; it has no effect.",
                    hint=f"Did you mean {close[0]!r}?" if close else "Remove it.",
                    id="tasker_django.W001",
                )
            )
    counts = ("DEFAULT_MAX_ATTEMPTS", "EAGER_MAX_STEPS")
    seconds = ("LEASE_SECONDS", "REKICK_AFTER_SECONDS", "SWEEP_INTERVAL", "EAGER_MAX_SECONDS")
    for key in counts:
        if key in raw and not _is_count(raw[key]):
            messages.append(_e002(key, "a whole number of at least 1", raw[key]))
    for key in seconds:
        if key in raw and not _is_positive(raw[key]):
            messages.append(_e002(key, "a positive number of seconds", raw[key]))
    # Read as truth values: a string such as "false" would silently mean True.
    switches = ("EAGER_CONTINUATION", "PG_PREPARED_STATEMENTS", "PG_SYNCHRONOUS_COMMIT")
    for key in switches:
        if key in raw and not isinstance(raw[key], bool):
            messages.append(_e002(key, "True or False", raw[key]))
    if "DEFAULT_STEP_TIMEOUT" in raw:
        value = raw["DEFAULT_STEP_TIMEOUT"]
        if value is not None and not _is_positive(value):
            messages.append(_e002("DEFAULT_STEP_TIMEOUT", "a positive number or None", value))
    backoff = raw.get("DEFAULT_BACKOFF", DEFAULTS["DEFAULT_BACKOFF"])
    if not isinstance(backoff, dict) or any(
        k not in {"strategy", "initial_delay", "max_delay", "multiplier", "jitter"} for k in backoff
    ):
        messages.append(
            _e002(
                "DEFAULT_BACKOFF",
                "a dict of strategy, initial_delay, max_delay, multiplier and jitter",
                backoff,
            )
        )
    dirs = raw.get("TEMPLATE_DIRS", [])
    if not isinstance(dirs, list | tuple):
        messages.append(
            Error(
                "TASKER['TEMPLATE_DIRS'] must be a list of directories.",
                hint="For example [BASE_DIR / 'task_templates'].",
                id="tasker_django.E002",
            )
        )
    else:
        for d in dirs:
            if not isinstance(d, str | os.PathLike):
                messages.append(_e002("TEMPLATE_DIRS", "a list of directory paths", d))
            elif not Path(d).is_dir():
                messages.append(
                    Warning(
                        f"TASKER['TEMPLATE_DIRS'] entry {str(d)!r} is not a directory.",
                        hint="Create it or remove it from the list.",
                        id="tasker_django.W002",
                    )
                )
    from .handlers.discovery import check_handler_settings

    for problem in check_handler_settings():
        messages.append(
            Error(
                problem,
                hint="Each entry needs 'class' (a dotted path to a StepHandler subclass).",
                id="tasker_django.E003",
            )
        )
    messages.extend(_check_queue_timeouts(raw))
    return messages


def _is_positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _e002(key: str, expected: str, value: Any) -> Any:
    return Error(
        f"TASKER[{key!r}] must be {expected}, got {value!r}.",
        hint=f"The default is {DEFAULTS[key]!r}.",
        id="tasker_django.E002",
    )


def _seconds(raw: dict[str, Any], key: str) -> float | None:
    """The setting in seconds (None: no limit = 0); None if invalid (E002 reports it)."""
    value = raw.get(key, DEFAULTS[key])
    if value is None:
        return 0.0
    return float(value) if _is_positive(value) else None


def _check_queue_timeouts(raw: dict[str, Any]) -> list[Any]:
    q = getattr(settings, "Q_CLUSTER", {}) or {}
    if not isinstance(q, dict):
        return []
    timeout: Any = q.get("timeout")
    retry: Any = q.get("retry")
    step_timeout = _seconds(raw, "DEFAULT_STEP_TIMEOUT")
    eager = _seconds(raw, "EAGER_MAX_SECONDS")
    if step_timeout is None or eager is None:
        return []
    needed = step_timeout + eager
    messages: list[Any] = []
    if _is_positive(timeout) and float(timeout) <= needed:
        messages.append(
            Warning(
                f"Q_CLUSTER['timeout'] ({timeout}) is not above the default step timeout plus "
                f"the eager-continuation budget ({needed:g} s): django-q2 may kill a worker "
                "in the middle of a step.",
                hint="Raise Q_CLUSTER['timeout'] or lower TASKER['DEFAULT_STEP_TIMEOUT'].",
                id="tasker_django.W004",
            )
        )
    if _is_positive(timeout) and _is_positive(retry) and retry <= timeout:
        messages.append(
            Warning(
                f"Q_CLUSTER['retry'] ({retry}) must be larger than Q_CLUSTER['timeout'] "
                f"({timeout}), or django-q2 delivers running kicks twice.",
                hint="Set retry to timeout plus a margin.",
                id="tasker_django.W004",
            )
        )
    return messages


@register("tasker_django", Tags.database)
def check_loaded_handlers(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Any]:
    """Current templates whose ``handler_class`` no longer resolves (one query per database).

    A database check, as Django asks: it runs with ``manage.py check --database
    default`` and before ``migrate``, not on every ``runserver`` start.
    """
    from .handlers.registry import registry
    from .models import NamedStep

    messages: list[Any] = []
    for alias in databases or ():
        messages.extend(_unresolved_handlers(NamedStep.objects.using(alias), registry))
    messages.extend(_unregistered_actions(current_templates(databases)))
    return messages


def _unregistered_actions(templates: list[dict[str, Any]]) -> list[Any]:
    """W005: escalation rules naming an action TASKER['ESCALATION_ACTIONS'] lacks."""
    from .conf import tasker_settings

    registered = set(tasker_settings.ESCALATION_ACTIONS or {})
    messages: list[Any] = []
    for template in templates:
        sections = template.get("sections") or {}
        rules = (sections.get("error_handling") or {}).get("escalation_rules") or []
        for rule in rules:
            action = rule.get("action") if isinstance(rule, dict) else None
            if action and action not in registered:
                label = template_label(template)
                messages.append(
                    Warning(
                        f"Template {label}: escalation action {action!r} is not registered, "
                        "so matching escalations are recorded and signalled but call nothing.",
                        hint="Add it to TASKER['ESCALATION_ACTIONS'] as a dotted path to a "
                        "function taking the escalation event.",
                        id="tasker_django.W005",
                    )
                )
    return messages


@register("tasker_django")
def check_event_sinks(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """W007: ``TASKER['EVENT_SINKS']`` entries that do not load (engine/publication.py)."""
    from .engine.publication import check_sink_settings

    return check_sink_settings()


@register("tasker_django", Tags.database)
def check_event_routing(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """W006/W007 of the current templates' events and audit_logging (one query per database)."""
    from .engine.publication import check_templates
    from .models import NamedTask

    messages: list[Any] = []
    for alias in databases or ():
        try:
            rows = list(
                NamedTask.objects.using(alias)
                .filter(is_current=True)
                .order_by("namespace__name", "name", "version")
                .values_list("template", flat=True)
            )
        except DatabaseError:
            continue  # not migrated yet
        messages.extend(check_templates(rows))
    return messages


@register("tasker_django")
def check_monitoring_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """W009: ``TASKER['ALERT_*']`` settings (monitoring/checks.py)."""
    from .monitoring.checks import settings_messages

    return settings_messages()


@register("tasker_django", Tags.database)
def check_monitoring(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """W008/W009 of the current templates' monitoring sections (two queries per database)."""
    from .monitoring.checks import template_messages

    return template_messages(databases)


def _unresolved_handlers(steps: Any, registry: Any) -> list[Any]:
    try:
        rows = list(
            steps.filter(named_task__is_current=True)
            .values_list(
                "handler_class",
                "named_task__namespace__name",
                "named_task__name",
                "named_task__version",
                "name",
            )
            .order_by("named_task__namespace__name", "named_task__name", "position")
        )
    except DatabaseError:
        return []  # not migrated yet
    messages: list[Any] = []
    for handler_class, namespace, name, version, step in rows:
        try:
            registry.resolve(handler_class, namespace=namespace)
        except Exception as exc:
            messages.append(
                Warning(
                    f"Template {namespace}/{name}@{version}, step {step!r}: handler "
                    f"{handler_class!r} does not resolve ({exc}).",
                    hint="Register the handler (a tasker_handlers module or TASKER['HANDLERS']) "
                    "or load a corrected template.",
                    id="tasker_django.W003",
                )
            )
    return messages


@register("tasker_django", Tags.database)
def check_test_scenarios(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Any]:
    """W012: current templates' ``testing`` sections (testing/scenarios.py)."""
    from .testing.scenarios import testing_section_warnings

    messages: list[Any] = []
    for template in current_templates(databases):
        messages += [
            Warning(
                f"Template {template_label(template)}: {problem}.",
                hint="Mocks are registered in TASKER['MOCK_SERVICES'] (name: dotted path "
                "to a class taking the scenario); scenarios name only the template's steps "
                "(docs/testing.md). tasker_test_scenarios fails a scenario it cannot run.",
                id="tasker_django.W012",
            )
            for problem in testing_section_warnings(template)
        ]
    return messages


@register("tasker_django", Tags.database)
def check_inert_template_keys(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Any]:
    """W013: keys of current templates that do nothing (definitions/keys.py)."""
    from .definitions.keys import deployment_gaps, inert_keys, stored_raw

    messages: list[Any] = []
    for template in current_templates(databases):
        label = template_label(template)
        for path, reason in inert_keys(stored_raw(template)):
            messages.append(
                Warning(
                    f"Template {label}: key {path!r} {reason}.",
                    hint="Remove the key, or see docs/templates.md (Every key).",
                    obj=label,
                    id="tasker_django.W013",
                )
            )
        for gap in deployment_gaps(template, settings.DATABASES, settings.CACHES):
            messages.append(
                Warning(
                    f"Template {label}: {gap}.",
                    hint="See docs/templates.md (database_pool and caching).",
                    obj=label,
                    id="tasker_django.W014",
                )
            )
    return messages
