"""pytest fixtures for projects using tasker-django (auto-loaded via the pytest11 entry point).

Fixtures: ``tasker_registry`` (an isolated handler registry), ``tasker_foundation``
(namespace + named task + named step), ``tasker_load_template`` (load YAML text),
``tasker_run`` (``run_task_to_completion``), ``run_tasker_scenario`` (run a template's
test scenario, see ``tasker_django.testing.scenarios``). Database fixtures require
pytest-django.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def tasker_registry() -> Iterator[Any]:
    """The global handler registry, restored after the test."""
    from tasker_django.handlers.registry import registry

    with registry.isolated():
        yield registry


@pytest.fixture
def tasker_foundation(db: Any) -> Any:
    from tasker_django.testing.helpers import create_test_foundation

    return create_test_foundation()


@pytest.fixture
def tasker_load_template(db: Any) -> Callable[..., Any]:
    from tasker_django.testing.helpers import load_test_template

    return load_test_template


@pytest.fixture
def tasker_run(db: Any) -> Callable[..., Any]:
    from tasker_django.testing.inline import run_task_to_completion

    return run_task_to_completion


@pytest.fixture
def run_tasker_scenario(db: Any) -> Callable[..., Any]:
    """Run one test scenario and fail the test if it fails; returns its ``ScenarioResult``.

    Call it with a case from ``scenario_params(...)`` (a ``ScenarioCase``: the template
    file is loaded first), or with a stored ``NamedTask`` and a scenario name. Pass
    ``check=False`` to inspect a failing result instead.
    """
    from tasker_django.testing.scenarios import ScenarioCase, find_scenario, run_case, run_scenario

    def run(target: Any, scenario: str | None = None, *, check: bool = True) -> Any:
        __tracebackhide__ = True
        if isinstance(target, ScenarioCase):
            result = run_case(target)
        else:
            if scenario is None:
                raise TypeError("run_tasker_scenario(named_task, scenario_name): name missing")
            result = run_scenario(target, find_scenario(target, scenario))
        if check and not result.passed:
            pytest.fail(result.describe(), pytrace=False)
        return result

    return run
