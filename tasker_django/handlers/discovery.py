"""Start-up discovery of step handlers.

:func:`autodiscover` (called by ``TaskerConfig.ready()``) imports the
``tasker_handlers`` module of every installed app, so the handler classes in them
register themselves, then registers the entries of ``TASKER['HANDLERS']`` and of the
YAML file ``TASKER['HANDLERS_FILE']``. Such an entry registers an existing class under
a name, namespace, version, aliases and default config::

    TASKER = {"HANDLERS": [
        {"name": "charge_eu", "class": "shop.handlers.Charge", "config": {"region": "eu"}},
    ]}

Keys left out default to the class's own (``handler_name`` and so on), so an entry with
only ``class`` and ``config`` gives a self-registered handler its default config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from django.utils.module_loading import autodiscover_modules, import_string

from ..conf import tasker_settings
from .base import StepHandler
from .errors import HandlerConfigurationError
from .registry import HandlerRegistry, registry

__all__ = ["autodiscover", "check_handler_settings", "register_configured_handlers"]

ENTRY_KEYS: frozenset[str] = frozenset(
    {"name", "class", "config", "namespace", "version", "aliases"}
)


@dataclass(frozen=True)
class _Spec:
    label: str
    source: str
    handler_class: type[StepHandler]
    name: str | None
    namespace: str | None
    version: str | None
    aliases: tuple[str, ...]
    config: dict[str, Any]


def autodiscover() -> None:
    """Import every app's handler module, then register configured handlers.

    Idempotent; makes no database queries.
    """
    module_name = tasker_settings.HANDLER_MODULE
    if module_name:
        autodiscover_modules(module_name)
    register_configured_handlers()


def register_configured_handlers(target: HandlerRegistry | None = None) -> int:
    """Register the entries of ``TASKER['HANDLERS']`` and ``TASKER['HANDLERS_FILE']``.

    Raises :class:`HandlerConfigurationError` naming the first bad entry. Returns how
    many entries were registered.
    """
    target = registry if target is None else target
    specs = [_parse_entry(label, source, raw) for label, source, raw in _raw_entries()]
    for spec in specs:
        _register(target, spec)
    return len(specs)


def check_handler_settings() -> list[str]:
    """Problems of ``TASKER['HANDLERS']`` / ``TASKER['HANDLERS_FILE']``, one per string.

    Never raises; registers nothing (conflicts are found on a copy of the registry).
    """
    problems: list[str] = []
    try:
        raw_entries = _raw_entries(problems)
    except Exception as exc:  # settings unreadable: report, do not crash the checks
        return [f"{type(exc).__name__}: {exc}"]
    dry_run = registry.copy()
    for label, source, raw in raw_entries:
        try:
            _register(dry_run, _parse_entry(label, source, raw))
        except Exception as exc:
            problems.append(str(exc))
    return problems


def _raw_entries(problems: list[str] | None = None) -> list[tuple[str, str, Any]]:
    """(label, source, raw entry) of settings, then file entries.

    With ``problems`` given, a problem that makes a whole source unreadable is appended
    to it instead of raised.
    """
    entries: list[tuple[str, str, Any]] = []
    for read in (_settings_entries, _file_entries):
        try:
            entries += read()
        except HandlerConfigurationError as exc:
            if problems is None:
                raise
            problems.append(str(exc))
    return entries


def _settings_entries() -> list[tuple[str, str, Any]]:
    handlers = tasker_settings.HANDLERS
    if handlers is None:
        return []
    if isinstance(handlers, str | bytes | Mapping) or not isinstance(handlers, list | tuple):
        raise HandlerConfigurationError(
            f"TASKER['HANDLERS'] must be a list of dicts, not {type(handlers).__name__}."
        )
    return [(f"TASKER['HANDLERS'][{i}]", "settings", raw) for i, raw in enumerate(handlers)]


def _file_entries() -> list[tuple[str, str, Any]]:
    value = tasker_settings.HANDLERS_FILE
    if not value:
        return []
    if not isinstance(value, str | os.PathLike):
        raise HandlerConfigurationError(
            f"TASKER['HANDLERS_FILE'] must be a file path, not {type(value).__name__}."
        )
    path = Path(value)
    where = f"TASKER['HANDLERS_FILE'] ({path})"
    try:
        with path.open(encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except OSError as exc:
        raise HandlerConfigurationError(f"{where} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise HandlerConfigurationError(f"{where} is not valid YAML: {exc}") from exc
    if data is None:
        return []
    if not isinstance(data, dict) or "handlers" not in data:
        raise HandlerConfigurationError(
            f"{where} must be a mapping with a top-level 'handlers:' list."
        )
    unknown = sorted(str(key) for key in data if key != "handlers")
    if unknown:
        raise HandlerConfigurationError(
            f"{where} has unknown top-level keys {unknown}; only 'handlers' is allowed."
        )
    handlers = data["handlers"]
    if handlers is None:
        return []
    if not isinstance(handlers, list):
        raise HandlerConfigurationError(f"{where}: 'handlers' must be a list of mappings.")
    return [(f"{path}: handlers[{i}]", "file", raw) for i, raw in enumerate(handlers)]


def _parse_entry(label: str, source: str, raw: Any) -> _Spec:
    """Validate one entry and import its class."""
    if not isinstance(raw, Mapping):
        raise HandlerConfigurationError(
            f"{label} must be a mapping with at least a 'class' key, not {type(raw).__name__}."
        )
    if isinstance(raw.get("name"), str):
        label = f"{label} (name {raw['name']!r})"
    unknown = sorted(str(key) for key in raw if key not in ENTRY_KEYS)
    if unknown:
        raise HandlerConfigurationError(
            f"{label}: unknown keys {unknown}; allowed keys are {sorted(ENTRY_KEYS)}."
        )
    path = raw.get("class")
    if not isinstance(path, str) or not path.strip():
        raise HandlerConfigurationError(
            f"{label}: 'class' is required: the dotted path of a StepHandler subclass."
        )
    try:
        handler_class = import_string(path.strip())
    except Exception as exc:
        raise HandlerConfigurationError(
            f"{label}: cannot import {path!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(handler_class, type) and issubclass(handler_class, StepHandler)):
        raise HandlerConfigurationError(f"{label}: {path!r} is not a StepHandler subclass.")
    if handler_class.abstract:
        raise HandlerConfigurationError(f"{label}: {path!r} is an abstract StepHandler.")
    texts: dict[str, str | None] = {}
    for key in ("name", "namespace", "version"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            hint = " (quote it in YAML: '1.10.0')" if key == "version" else ""
            raise HandlerConfigurationError(
                f"{label}: {key!r} must be a non-empty string, not {value!r}{hint}."
            )
        texts[key] = value.strip() if isinstance(value, str) else None
    aliases = raw.get("aliases") or []
    if not isinstance(aliases, list | tuple) or not all(
        isinstance(alias, str) and alias.strip() for alias in aliases
    ):
        raise HandlerConfigurationError(f"{label}: 'aliases' must be a list of non-empty strings.")
    config = raw.get("config")
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise HandlerConfigurationError(
            f"{label}: 'config' must be a mapping, not {type(config).__name__}."
        )
    return _Spec(
        label=label,
        source=source,
        handler_class=handler_class,
        name=texts["name"],
        namespace=texts["namespace"],
        version=texts["version"],
        aliases=tuple(alias.strip() for alias in aliases),
        config=dict(config),
    )


def _register(target: HandlerRegistry, spec: _Spec) -> None:
    try:
        target.register(
            spec.handler_class,
            name=spec.name,
            namespace=spec.namespace,
            version=spec.version,
            aliases=spec.aliases,
            config=spec.config,
            source=spec.source,
        )
    except (TypeError, ValueError) as exc:
        raise HandlerConfigurationError(f"{spec.label}: {exc}") from exc
