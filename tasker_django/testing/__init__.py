"""Test helpers for projects that use tasker-django (and for its own tests).

Factories (factory-boy), ``create_test_*`` helpers modelled on the seed's factory
system, ``run_task_to_completion`` (inline, deterministic, no broker) and a pytest
plugin with fixtures (``tasker_django.testing.pytest_plugin``, registered as a
pytest11 entry point). Exports are lazy so the plugin loads before Django is set up.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "NamespaceFactory": "factories",
    "NamedTaskFactory": "factories",
    "NamedStepFactory": "factories",
    "TaskFactory": "factories",
    "WorkflowStepFactory": "factories",
    "create_test_foundation": "helpers",
    "create_test_task": "helpers",
    "create_test_workflow_step": "helpers",
    "load_test_template": "helpers",
    "Foundation": "helpers",
    "run_task_to_completion": "inline",
    "FakeClock": "inline",
    "Scenario": "scenarios",
    "ScenarioCase": "scenarios",
    "ScenarioResult": "scenarios",
    "run_scenario": "scenarios",
    "scenario_params": "scenarios",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tasker_django.testing' has no attribute {name!r}")
    value = getattr(import_module(f"tasker_django.testing.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
