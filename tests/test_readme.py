"""README.md and docs/ match the code: their examples run, their tables list what exists.

Code blocks fenced as ```python readme-test / ```yaml readme-test are executed.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import load_command_class
from django.core.management.base import BaseCommand
from django.dispatch import Signal

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEMPLATES_DOC = ROOT / "docs" / "templates.md"
HANDLERS_DOC = ROOT / "docs" / "handlers.md"
COMMANDS = sorted(p.stem for p in (ROOT / "tasker_django/management/commands").glob("tasker_*.py"))

FENCE = re.compile(r"^```(\w+) readme-test\n(.*?)^```$", re.MULTILINE | re.DOTALL)
OPTION = re.compile(r"--[a-z][a-z-]*")


def blocks(path: Path, language: str) -> list[str]:
    """The bodies of the ``readme-test`` code blocks of ``language`` in ``path``."""
    return [body for lang, body in FENCE.findall(path.read_text()) if lang == language]


def section(path: Path, heading: str) -> str:
    """The text under ``## heading`` up to the next ``## `` heading."""
    text = path.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def table(path: Path, heading: str) -> list[list[str]]:
    """The rows (cells stripped, header and rule dropped) of the tables in a section."""
    rows = []
    for line in section(path, heading).splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return [row for row in rows if not row[0][:1].isalpha()]  # header cells are plain words


def run(code: str, source: str, namespace: dict[str, Any]) -> None:
    exec(compile(code, source, "exec"), namespace)


# -- examples -------------------------------------------------------------------------


@pytest.mark.django_db
def test_readme_example_runs() -> None:
    from tasker_django.handlers.registry import registry
    from tasker_django.testing import load_test_template

    python = blocks(README, "python")
    yaml = blocks(README, "yaml")
    assert len(python) == 2 and len(yaml) == 1
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    with registry.isolated():
        run(python[0], "README.md (handlers)", namespace)
        named_task = load_test_template(yaml[0])
        assert str(named_task) == "shop/fulfil_order@1.0.0"
        run(python[1], "README.md (create and run)", namespace)  # asserts the results itself
    assert "ReserveStock" not in registry  # the handlers did not leak
    assert namespace["task"].status == "complete"


def test_handlers_doc_example_runs() -> None:
    (code,) = blocks(HANDLERS_DOC, "python")
    run(code, "docs/handlers.md", {"__name__": "handlers_doc_example"})


# -- tables ---------------------------------------------------------------------------


def test_settings_table_lists_every_key_with_its_default() -> None:
    from tasker_django.conf import DEFAULTS

    documented = {
        key.strip("`"): ast.literal_eval(default.strip("`"))
        for key, default, _meaning in table(README, "TASKER settings")
    }
    assert documented == DEFAULTS


def _command_cells() -> dict[str, str]:
    return {row[0].strip("`").split()[0]: row[0] for row in table(README, "Commands")}


def test_commands_table_lists_every_command() -> None:
    assert sorted(_command_cells()) == COMMANDS


@pytest.mark.parametrize("name", COMMANDS)
def test_commands_table_matches_each_commands_options(name: str) -> None:
    base = BaseCommand().create_parser("manage.py", "base")
    django_options = {s for action in base._actions for s in action.option_strings}
    parser = load_command_class("tasker_django", name).create_parser("manage.py", name)
    options = {s for action in parser._actions for s in action.option_strings}
    documented = set(OPTION.findall(_command_cells()[name]))
    assert documented <= options
    assert {o for o in options - django_options if o.startswith("--")} <= documented


def test_signals_checks_and_operations_are_documented() -> None:
    from tasker_django import checks, signals
    from tasker_django.services import operations

    signal_names = {name for name, value in vars(signals).items() if isinstance(value, Signal)}
    assert {row[0].strip("`") for row in table(README, "Signals")} == signal_names

    documented_ids = {row[0].strip("`") for row in table(README, "System checks")}
    # Every id a check can raise, wherever the check lives.
    raised = re.compile(r'id="(tasker_django\.[EW]\d{3})"')
    package = Path(checks.__file__).parent
    in_code = {
        found for path in package.rglob("*.py") for found in raised.findall(path.read_text())
    }
    assert documented_ids == in_code

    actions = section(README, "Operator actions")
    public = [
        name
        for name, value in vars(operations).items()
        if inspect.isfunction(value)
        and value.__module__ == operations.__name__
        and not name.startswith("_")
    ]
    for name in public:
        assert f"`{name}" in actions, name


def test_create_task_parameters_are_documented() -> None:
    from tasker_django.services.tasks import create_task

    text = section(README, "Creating tasks")
    for name in list(inspect.signature(create_task).parameters)[1:]:
        assert f"    {name}=" in text, name


def test_templates_doc_lists_every_key() -> None:
    from tasker_django.definitions import format_schema
    from tasker_django.definitions.parse import STEP_KEYS, TOP_LEVEL_KEYS

    top = section(TEMPLATES_DOC, "Top-level keys")
    for key in TOP_LEVEL_KEYS:
        assert f"`{key}`" in top, key
    for key in (
        *format_schema._TASK_CONFIG["properties"],
        *format_schema._SETTINGS["properties"],
    ):
        assert f"`{key}`" in top, key
    steps = section(TEMPLATES_DOC, "Step keys")
    for key in STEP_KEYS:
        assert re.search(rf"`{key}[`.]", steps), key
    backoff = section(TEMPLATES_DOC, "Backoff: `retry_backoff`")
    for key in format_schema._BACKOFF["else"]["properties"]:
        assert f"{key}:" in backoff, key
    for strategy in format_schema.BACKOFF_STRATEGIES:
        assert strategy in backoff, strategy
