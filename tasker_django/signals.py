"""Signals sent after the transaction that made the change commits.

Every signal is sent with ``sender`` = the model class (``Task`` or
``WorkflowStep``) and keyword arguments ``event`` (a dict: ``task_id``,
``step_id``, ``task_name``, ``step_name``, ``namespace``, ``version``,
``attempt``, ``duration_ms``, ``error`` ...). The same events are stored in
``TaskEvent``.
"""

from django.dispatch import Signal

task_started = Signal()
task_completed = Signal()
task_failed = Signal()
task_cancelled = Signal()
step_started = Signal()
step_completed = Signal()
step_failed = Signal()
step_retried = Signal()
step_resolved = Signal()
step_cancelled = Signal()
#: A handler published a custom event its template declares (``self.publish_event``);
#: ``event["event"]`` is its name, ``event["data"]`` its payload.
custom_event = Signal()
#: A failed attempt matched a template's ``error_handling.escalation_rules``.
step_escalated = Signal()
#: A template's ``monitoring.alerts`` condition started firing (``tasker_evaluate_alerts``);
#: sent with ``sender=Alert``, ``alert`` (the row) and ``event`` (a dict of its fields).
alert_fired = Signal()
#: A firing alert's condition cleared; same arguments as ``alert_fired``.
alert_resolved = Signal()

#: Event name (as stored in ``TaskEvent.name``) -> signal.
BY_EVENT = {
    "task.started": task_started,
    "task.completed": task_completed,
    "task.failed": task_failed,
    "task.cancelled": task_cancelled,
    "step.started": step_started,
    "step.completed": step_completed,
    "step.failed": step_failed,
    "step.retried": step_retried,
    "step.resolved": step_resolved,
    "step.cancelled": step_cancelled,
    "step.escalated": step_escalated,
    "custom": custom_event,
}
