"""The package imports before ``django.setup()`` and exports its public API lazily."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tasker_django

PUBLIC = {
    "InvalidTransition",
    "PermanentError",
    "RetryableError",
    "StepHandler",
    "TaskValidationError",
    "TaskerError",
    "TemplateNotFound",
    "__version__",
    "create_task",
    "registry",
}

BEFORE_SETUP = textwrap.dedent(
    """
    import json, sys
    import tasker_django
    import tasker_django.definitions
    import tasker_django.testing
    import tasker_django.testing.pytest_plugin  # loaded by pytest before Django is set up
    from django.apps import apps
    from django.conf import settings

    names = ["StepHandler", "PermanentError", "RetryableError", "TaskerError",
             "TaskValidationError", "TemplateNotFound", "InvalidTransition"]
    resolved = {name: getattr(tasker_django, name).__name__ for name in names}
    template = tasker_django.definitions.parse_template(
        "name: t\\nversion: '1.0.0'\\nstep_templates:\\n  - {name: a, handler_class: x.Y}\\n",
        source="<subprocess>",
    )
    print(json.dumps({
        "file": tasker_django.__file__,
        "models_imported": "tasker_django.models" in sys.modules,
        "django_models_imported": "django.db.models" in sys.modules,
        "settings_configured": settings.configured,
        "apps_ready": apps.ready,
        "resolved": resolved,
        "dir": dir(tasker_django),
        "testing_dir": dir(tasker_django.testing),
        "steps": [s.name for s in template.steps],
    }))
    """
)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    return env


def test_imports_before_django_setup_without_models(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", BEFORE_SETUP],
        cwd=tmp_path,  # not the repository: the installed package is imported
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["models_imported"] is False
    assert data["settings_configured"] is False
    assert data["apps_ready"] is False
    assert data["resolved"]["StepHandler"] == "StepHandler"
    assert data["resolved"]["PermanentError"] == "PermanentError"
    assert set(data["dir"]) == PUBLIC
    assert "run_task_to_completion" in data["testing_dir"]
    assert data["steps"] == ["a"]
    assert Path(data["file"]).resolve() == Path(tasker_django.__file__).resolve()


def test_create_task_needs_configured_settings_with_a_clear_error(tmp_path: Path) -> None:
    code = "import tasker_django\ntasker_django.create_task\n"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "ImproperlyConfigured" in proc.stderr or "AppRegistryNotReady" in proc.stderr


def test_dir_lists_the_public_api() -> None:
    assert dir(tasker_django) == sorted(PUBLIC)
    assert set(tasker_django.__all__) == PUBLIC


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_names_resolve_after_setup(name: str) -> None:
    assert getattr(tasker_django, name) is not None


def test_lazy_exports_are_the_real_objects() -> None:
    from tasker_django.exceptions import InvalidTransition, TaskerError, TemplateNotFound
    from tasker_django.handlers.base import StepHandler
    from tasker_django.handlers.errors import PermanentError, RetryableError
    from tasker_django.handlers.registry import registry
    from tasker_django.services.tasks import create_task

    assert tasker_django.StepHandler is StepHandler
    assert tasker_django.PermanentError is PermanentError
    assert tasker_django.RetryableError is RetryableError
    assert tasker_django.registry is registry
    assert tasker_django.create_task is create_task
    assert tasker_django.TaskerError is TaskerError
    assert tasker_django.TemplateNotFound is TemplateNotFound
    assert tasker_django.InvalidTransition is InvalidTransition
    assert issubclass(tasker_django.TaskValidationError, tasker_django.TaskerError)


def test_star_import_gives_the_public_api() -> None:
    namespace: dict[str, object] = {}
    exec("from tasker_django import *", namespace)
    assert set(namespace) >= PUBLIC


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = tasker_django.nope  # type: ignore[attr-defined]
    with pytest.raises(ImportError):
        exec("from tasker_django import nope", {})
    import tasker_django.testing as testing

    with pytest.raises(AttributeError):
        _ = testing.nope  # type: ignore[attr-defined]


def test_testing_exports_resolve() -> None:
    import tasker_django.testing as testing

    for name in testing.__all__:
        assert getattr(testing, name) is not None, name
    assert dir(testing) == sorted(testing.__all__)


def test_version_matches_the_installed_distribution() -> None:
    assert tasker_django.__version__ == importlib.metadata.version("tasker-django")
