"""pytest fixtures for projects using tasker-django (auto-loaded via the pytest11 entry point).

Fixtures: ``tasker_registry`` (an isolated handler registry), ``tasker_foundation``
(namespace + named task + named step), ``tasker_load_template`` (load YAML text),
``tasker_run`` (``run_task_to_completion``). Database fixtures require pytest-django.
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
