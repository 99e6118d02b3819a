"""The Django admin of tasker-django: read-mostly pages and operator actions.

* Namespaces and named tasks: versions side by side, the step graph, handlers and
  retry policies, task counts per version and outcome.
* Tasks: a list that stays fast with 100,000 rows, and a page with the live DAG (a
  server-rendered SVG), the steps with their waiting reasons, and the event timeline.
* Steps: every attempt with its error; step attempts and task events as lists.
* A dashboard (``admin:tasker_django_dashboard``).

Status fields are never edited here. Operator actions (retry, resolve, cancel, bulk
retry and cancel) ask for confirmation, call ``services.operations`` and need the
permissions ``tasker_django.retry_step``, ``resolve_step``, ``cancel_step`` and
``cancel_task``.
"""

from __future__ import annotations

from .alerts import AlertAdmin
from .audit import AuditRecordAdmin
from .definitions import NamedTaskAdmin, NamespaceAdmin
from .steps import StepAttemptAdmin, TaskEventAdmin, WorkflowStepAdmin
from .tasks import TaskAdmin

__all__ = [
    "AlertAdmin",
    "AuditRecordAdmin",
    "NamedTaskAdmin",
    "NamespaceAdmin",
    "StepAttemptAdmin",
    "TaskAdmin",
    "TaskEventAdmin",
    "WorkflowStepAdmin",
]
