"""constraints.business_rules are checked at task creation; conditions are checked at load."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from tasker_django import TaskValidationError, create_task
from tasker_django.definitions import TemplateError, parse_template
from tasker_django.models import Task

from .conftest import SEED_DIR

pytestmark = pytest.mark.django_db


@pytest.fixture
def payment_workflow() -> None:
    call_command("tasker_load_templates", str(SEED_DIR / "payment_workflow.yaml"), verbosity=0)


def test_rule_violation_carries_the_rules_message(payment_workflow: None) -> None:
    with pytest.raises(TaskValidationError) as info:
        create_task("payment_workflow", context={"payment_amount": 0.5, "currency": "JPY"})
    messages = {e["message"] for e in info.value.errors}
    assert messages == {"Payment amount must be at least $1", "Currency must be USD, EUR, or GBP"}
    assert {e["rule"] for e in info.value.errors} == {
        "minimum_payment_amount",
        "supported_currencies",
    }
    assert not Task.objects.exists()


def test_context_within_the_rules_creates_the_task(payment_workflow: None) -> None:
    task = create_task("payment_workflow", context={"payment_amount": 250, "currency": "EUR"})
    assert task.pk is not None


def test_rules_about_missing_fields_do_not_apply(payment_workflow: None) -> None:
    assert create_task("payment_workflow", context={"amount": 5}).pk is not None


BAD_CONDITIONS = """name: conditions
version: "1.0.0"
step_templates:
  - {name: a, handler_class: test.noop}
constraints:
  business_rules:
    - name: broken
      rule: "amount >="
error_handling:
  escalation_rules:
    - condition: "__import__('os').system('true')"
      action: escalate
monitoring:
  alerts:
    - name: no_condition
      severity: warning
"""


def test_bad_conditions_are_reported_at_load_with_lines() -> None:
    with pytest.raises(TemplateError) as info:
        parse_template(BAD_CONDITIONS, source="c.yaml")
    found = {(i.line, i.path) for i in info.value.issues}
    assert (8, "constraints.business_rules[0].rule") in found
    assert (11, "error_handling.escalation_rules[0].condition") in found
    assert (15, "monitoring.alerts[0]") in found
