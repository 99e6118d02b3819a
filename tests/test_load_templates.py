"""The tasker_load_templates command, the seed templates and the example project's."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from tasker_django import create_task
from tasker_django.models import NamedStep, NamedTask, TaskStatus
from tasker_django.testing import run_task_to_completion

from .conftest import EXAMPLE_TEMPLATES, SEED_DIR, chain_yaml

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("tasker_load_templates", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_seed_templates_check_passes_with_example_handlers() -> None:
    out, err = run("--check", str(SEED_DIR))
    assert err == ""
    assert out.count("valid ") == 3
    assert NamedTask.objects.count() == 0  # --check writes nothing
    # The keys that do nothing are named as the files load; none else.
    notes = [line for line in out.splitlines() if "note:" in line]
    assert len(notes) == 4, notes
    for key in (
        "'constraints.technical_constraints[].cpu_limit' has no effect",
        "'constraints.technical_constraints[].memory_limit' has no effect",
        "'performance.batching.batch_timeout' has no effect",
        "security.pci_compliance.audit_level ('level_1') has no effect",
    ):
        assert any(key in note for note in notes), key


def test_load_reload_and_change(tmp_path: Path) -> None:
    out, _ = run(str(SEED_DIR))
    assert out.count("created ") == 3
    out, _ = run(str(SEED_DIR))
    assert out.count("unchanged ") == 3
    changed = tmp_path / "payment_workflow.yaml"
    text = (SEED_DIR / "payment_workflow.yaml").read_text()
    changed.write_text(text.replace("timeout_seconds: 30", "timeout_seconds: 31", 1))
    with pytest.raises(CommandError):
        run(str(changed))
    out, _ = run("--force", str(changed))
    assert "updated " in out
    current = NamedTask.objects.get(name="payment_workflow", is_current=True)
    assert current.revision == 2
    assert NamedTask.objects.filter(name="payment_workflow").count() == 2


def test_environment_overrides_are_applied() -> None:
    run("--environment", "development", str(SEED_DIR / "credit_card_payment.yaml"))
    fraud = NamedStep.objects.get(name="check_fraud")
    assert fraud.handler_config == {"risk_threshold": 0.5, "timeout_ms": 5000, "debug_mode": True}


def test_unknown_environment_is_reported() -> None:
    with pytest.raises(CommandError):
        out, err = run("--environment", "moon", str(SEED_DIR / "credit_card_payment.yaml"))


def test_all_errors_of_a_file_reported_with_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        """name: broken
version: "1.0.0"
schema:
  type: objekt
step_templates:
  - name: a
    handler_class: test.noop
    depends_on_step: c
  - name: b
    handler_class: test.noop
    depends_on_steps: [a, ghost]
  - name: c
    handler_class: test.noop
    depends_on_step: b
"""
    )
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError):
        call_command("tasker_load_templates", str(bad), stdout=out, stderr=err)
    text = err.getvalue()
    assert "Traceback" not in text
    assert "cycle" in text and "a -> " in text
    assert "ghost" in text and ":11:" in text
    assert "schema" in text and ":4:" in text


def test_yaml_syntax_error_is_reported_not_raised(tmp_path: Path) -> None:
    bad = tmp_path / "syntax.yaml"
    bad.write_text("name: [unclosed\nversion: 1\n")
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("tasker_load_templates", str(bad), stdout=io.StringIO(), stderr=err)
    assert "syntax.yaml:" in err.getvalue()


def test_unresolvable_handler_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "nohandler.yaml"
    bad.write_text(chain_yaml("nohandler", 1, handler="NoSuchHandlerAnywhere"))
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("tasker_load_templates", str(bad), stdout=io.StringIO(), stderr=err)
    assert "NoSuchHandlerAnywhere" in err.getvalue()


def test_directory_is_searched_recursively(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLE_TEMPLATES, tmp_path / "t")
    out, _ = run(str(tmp_path))
    assert out.count("created ") == 3


def test_missing_path_is_a_command_error() -> None:
    with pytest.raises(CommandError):
        run("/no/such/dir")


@pytest.mark.parametrize("path", sorted(SEED_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_seed_templates_run_to_completion(path: Path) -> None:
    run(str(path))
    named = NamedTask.objects.get(is_current=True)
    context: dict[str, Any] = {
        "order_id": 1,
        "customer_id": 7,
        "amount": 120.5,
        "currency": "USD",
        "payment_info": {"amount": 120.5, "currency": "USD", "card_token": "tok_1234567890"},
    }
    task = run_task_to_completion(
        create_task(named.name, namespace=named.namespace.name, context=context)
    )
    assert task.status == TaskStatus.COMPLETE, list(task.steps.values("name", "last_error"))
