"""JSON Schema (draft 2020-12) of the task template format: types and shapes only.

Semantic rules (dependencies, cycles, aliases, environments) live in ``parse.py``.
Unknown top-level keys are allowed (kept as sections); unknown step keys are
allowed (kept in ``StepDefinition.extra``).
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

BACKOFF_STRATEGIES = ("exponential", "linear", "fixed")

_NAME: dict[str, Any] = {"type": "string", "minLength": 1}
_OPT_NAME: dict[str, Any] = {"type": ["string", "null"], "minLength": 1}
_OPT_TEXT: dict[str, Any] = {"type": ["string", "null"]}
_NAMES: dict[str, Any] = {"type": ["array", "null"], "items": _NAME}
_BOOL: dict[str, Any] = {"type": "boolean"}
_ATTEMPTS: dict[str, Any] = {"type": "integer", "minimum": 1}
_SECONDS: dict[str, Any] = {"type": "number", "exclusiveMinimum": 0}
_NON_NEGATIVE: dict[str, Any] = {"type": "number", "minimum": 0}
_MAPPING: dict[str, Any] = {"type": ["object", "null"]}
_STRATEGY: dict[str, Any] = {"enum": list(BACKOFF_STRATEGIES)}

_BACKOFF: dict[str, Any] = {
    "type": ["string", "object"],
    "if": {"type": "string"},
    "then": _STRATEGY,
    "else": {
        "properties": {
            "strategy": _STRATEGY,
            "initial_delay": _NON_NEGATIVE,
            "max_delay": _NON_NEGATIVE,
            "multiplier": {"type": "number", "exclusiveMinimum": 0},
            "jitter": _BOOL,
        },
        "additionalProperties": False,
    },
}

_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": _NAME, "description": _OPT_TEXT, "schema": {"type": "object"}},
}
_EVENTS: dict[str, Any] = {"type": ["array", "null"], "items": _EVENT}

STEP_PROPERTIES: dict[str, Any] = {
    "name": _NAME,
    "description": _OPT_TEXT,
    "handler_class": _OPT_NAME,
    "handler_config": _MAPPING,
    "depends_on_step": _OPT_NAME,
    "depends_on_steps": _NAMES,
    "dependencies": _NAMES,
    "default_retryable": _BOOL,
    "default_retry_limit": _ATTEMPTS,
    "skippable": _BOOL,
    "timeout_seconds": {"type": ["number", "null"], "exclusiveMinimum": 0},
    "retry_backoff": _BACKOFF,
    "dependent_system": _OPT_NAME,
    "custom_events": _EVENTS,
    "handler": {
        "type": "object",
        "properties": {"callable": _NAME, "initialization": _MAPPING},
        "additionalProperties": False,
    },
    "retry": {
        "type": "object",
        "properties": {
            "retryable": _BOOL,
            "max_attempts": _ATTEMPTS,
            "backoff": _STRATEGY,
            "backoff_base_ms": _NON_NEGATIVE,
            "max_backoff_ms": _NON_NEGATIVE,
        },
        "additionalProperties": False,
    },
}

_STEP: dict[str, Any] = {"type": "object", "required": ["name"], "properties": STEP_PROPERTIES}
_STEPS: dict[str, Any] = {"type": ["array", "null"], "items": _STEP}

# In an environment override, steps come as a list (``- name: X``) or a map keyed by name.
_OVERRIDE_STEPS: dict[str, Any] = {
    "type": ["array", "object", "null"],
    "items": _STEP,
    "additionalProperties": {"type": ["object", "null"], "properties": STEP_PROPERTIES},
}
_TASK_CONFIG: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {"retry_limit": _ATTEMPTS, "timeout_seconds": _SECONDS},
}
_SETTINGS: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {"default_retry_limit": _ATTEMPTS, "default_timeout": _SECONDS},
}
_OVERRIDE: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {
        "task_config": _TASK_CONFIG,
        "settings": _SETTINGS,
        "workflow_config": _MAPPING,
        "step_templates": _OVERRIDE_STEPS,
        "steps": _OVERRIDE_STEPS,
    },
    "additionalProperties": False,
}

TEMPLATE_FORMAT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "tasker-django task template",
    "type": "object",
    "properties": {
        "name": _NAME,
        "namespace": _NAME,
        "namespace_name": _NAME,
        "version": {"type": ["string", "number"], "minLength": 1},
        "description": _OPT_TEXT,
        "module_namespace": _OPT_NAME,
        "task_handler_class": _OPT_NAME,
        "default_dependent_system": _OPT_NAME,
        "named_steps": _NAMES,
        "schema": {"type": "object"},
        "input_schema": {"type": "object"},
        "step_templates": _STEPS,
        "steps": _STEPS,
        "task_config": _TASK_CONFIG,
        "settings": _SETTINGS,
        "workflow_config": _MAPPING,
        "environments": {"type": ["object", "null"], "additionalProperties": _OVERRIDE},
        "custom_events": _EVENTS,
    },
}

FORMAT_VALIDATOR = Draft202012Validator(TEMPLATE_FORMAT_SCHEMA)
SCHEMA_META_VALIDATOR = Draft202012Validator(Draft202012Validator.META_SCHEMA)
