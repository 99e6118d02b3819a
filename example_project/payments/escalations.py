"""Escalation actions of the example project (``TASKER["ESCALATION_ACTIONS"]``).

The seed template ``default/payment_workflow`` escalates failed payments to support,
security or manual review (its ``error_handling.escalation_rules``). Here an
escalation is a log line; a real project would page someone or open a ticket.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("example_project.payments.escalations")


def _escalate(team: str, event: dict[str, Any]) -> None:
    error = event.get("error") or {}
    logger.warning(
        "escalated to %s: task %s step %s (%s) failed: %s",
        team,
        event.get("task_id"),
        event.get("step_id"),
        event.get("step_name") or "?",
        error.get("message") or error.get("error_code") or "?",
    )


def escalate_to_support(event: dict[str, Any]) -> None:
    _escalate("support", event)


def escalate_to_security(event: dict[str, Any]) -> None:
    _escalate("security", event)


def escalate_to_manual_review(event: dict[str, Any]) -> None:
    _escalate("manual review", event)
