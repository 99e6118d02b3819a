"""System checks: ``tasker_django.E…`` errors and ``tasker_django.W…`` warnings.

| id   | what |
|------|------|
| E001 | ``TASKER`` is not a dict |
| E002 | a ``TASKER`` value has the wrong type or range |
| E003 | ``TASKER['HANDLERS']`` / ``HANDLERS_FILE`` has a bad entry |
| W001 | unknown ``TASKER`` key (typo?) |
| W002 | a ``TASKER['TEMPLATE_DIRS']`` entry is not a directory |
| W003 | a loaded template names a handler that no longer resolves |
| W004 | django-q2's ``timeout``/``retry`` do not leave room for step timeouts |
"""

from __future__ import annotations

import difflib
from numbers import Number
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.db import DatabaseError

from .conf import DEFAULTS


def _tasker() -> Any:
    return getattr(settings, "TASKER", {})


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
    positive = (
        "DEFAULT_MAX_ATTEMPTS",
        "LEASE_SECONDS",
        "REKICK_AFTER_SECONDS",
        "SWEEP_INTERVAL",
        "EAGER_MAX_STEPS",
        "EAGER_MAX_SECONDS",
    )
    for key in positive:
        if key in raw:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, Number) or value <= 0:  # type: ignore[operator]
                messages.append(
                    Error(
                        f"TASKER[{key!r}] must be a positive number, got {value!r}.",
                        hint=f"The default is {DEFAULTS[key]!r}.",
                        id="tasker_django.E002",
                    )
                )
    if "DEFAULT_STEP_TIMEOUT" in raw:
        value = raw["DEFAULT_STEP_TIMEOUT"]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, Number) or value <= 0  # type: ignore[operator]
        ):
            messages.append(
                Error(
                    "TASKER['DEFAULT_STEP_TIMEOUT'] must be a positive number or None, "
                    f"got {value!r}.",
                    hint="None means no limit.",
                    id="tasker_django.E002",
                )
            )
    backoff = raw.get("DEFAULT_BACKOFF", DEFAULTS["DEFAULT_BACKOFF"])
    if not isinstance(backoff, dict) or any(
        k not in {"strategy", "initial_delay", "max_delay", "multiplier", "jitter"} for k in backoff
    ):
        messages.append(
            Error(
                f"TASKER['DEFAULT_BACKOFF'] must be a dict of strategy, initial_delay, max_delay, "
                f"multiplier and jitter; got {backoff!r}.",
                hint=f"The default is {DEFAULTS['DEFAULT_BACKOFF']!r}.",
                id="tasker_django.E002",
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
            if not Path(d).is_dir():
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


def _check_queue_timeouts(raw: dict[str, Any]) -> list[Any]:
    q = getattr(settings, "Q_CLUSTER", {}) or {}
    timeout = q.get("timeout")
    retry = q.get("retry")
    step_timeout = raw.get("DEFAULT_STEP_TIMEOUT", DEFAULTS["DEFAULT_STEP_TIMEOUT"]) or 0
    eager = raw.get("EAGER_MAX_SECONDS", DEFAULTS["EAGER_MAX_SECONDS"])
    needed = float(step_timeout) + float(eager)
    messages: list[Any] = []
    if timeout is not None and isinstance(timeout, Number) and float(timeout) <= needed:  # type: ignore[arg-type]
        messages.append(
            Warning(
                f"Q_CLUSTER['timeout'] ({timeout}) is not above the default step timeout plus "
                f"the eager-continuation budget ({needed:g} s): django-q2 may kill a worker "
                "in the middle of a step.",
                hint="Raise Q_CLUSTER['timeout'] or lower TASKER['DEFAULT_STEP_TIMEOUT'].",
                id="tasker_django.W004",
            )
        )
    if timeout is not None and retry is not None and retry <= timeout:
        messages.append(
            Warning(
                f"Q_CLUSTER['retry'] ({retry}) must be larger than Q_CLUSTER['timeout'] "
                f"({timeout}), or django-q2 delivers running kicks twice.",
                hint="Set retry to timeout plus a margin.",
                id="tasker_django.W004",
            )
        )
    return messages


@register("tasker_django")
def check_loaded_handlers(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Current templates whose ``handler_class`` no longer resolves (one query)."""
    from .handlers.registry import registry
    from .models import NamedStep

    try:
        rows = list(
            NamedStep.objects.filter(named_task__is_current=True)
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
