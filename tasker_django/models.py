"""Persistent state: templates (namespaces, named tasks and steps) and runs (tasks, steps).

History tables (``StepAttempt``, ``TaskEvent``) are append-only: rows are inserted,
never updated, and the admin and API read them.
"""

from __future__ import annotations

from typing import Any

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .security.fields import EncryptedJSONField


class TaskStatus(models.TextChoices):
    #: Created while its template ran ``max_concurrent_workflows`` tasks: waits its turn.
    WAITING = "waiting", _("waiting for its turn")
    PENDING = "pending", _("pending")
    IN_PROGRESS = "in_progress", _("in progress")
    COMPLETE = "complete", _("complete")
    ERROR = "error", _("error")
    CANCELLED = "cancelled", _("cancelled")
    RESOLVED_MANUALLY = "resolved_manually", _("resolved manually")


class StepStatus(models.TextChoices):
    PENDING = "pending", _("pending")
    ENQUEUED = "enqueued", _("enqueued")
    IN_PROGRESS = "in_progress", _("in progress")
    WAITING_FOR_RETRY = "waiting_for_retry", _("waiting for retry")
    COMPLETE = "complete", _("complete")
    ERROR = "error", _("error")
    CANCELLED = "cancelled", _("cancelled")
    RESOLVED_MANUALLY = "resolved_manually", _("resolved manually")


#: Step states that satisfy a child's dependency.
DONE_STEP_STATUSES = (StepStatus.COMPLETE, StepStatus.RESOLVED_MANUALLY)
#: Step states from which nothing happens without an operator.
FINAL_STEP_STATUSES = (*DONE_STEP_STATUSES, StepStatus.ERROR, StepStatus.CANCELLED)
FINAL_TASK_STATUSES = (
    TaskStatus.COMPLETE,
    TaskStatus.CANCELLED,
    TaskStatus.RESOLVED_MANUALLY,
)
#: Task states in which nothing runs any more (``error`` included: only an operator
#: can start it again).
ENDED_TASK_STATUSES = (*FINAL_TASK_STATUSES, TaskStatus.ERROR)


class AttemptOutcome(models.TextChoices):
    SUCCESS = "success", _("success")
    RETRYABLE_ERROR = "retryable_error", _("retryable error")
    PERMANENT_ERROR = "permanent_error", _("permanent error")
    TIMEOUT = "timeout", _("timeout")
    WORKER_LOST = "worker_lost", _("worker lost")
    CANCELLED = "cancelled", _("cancelled")


class Namespace(models.Model):
    name = models.CharField(max_length=128, unique=True)
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        db_table = "tasker_namespace"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class NamedTask(models.Model):
    """One version of a task template, as loaded (environment overrides applied)."""

    namespace = models.ForeignKey(Namespace, on_delete=models.PROTECT, related_name="named_tasks")
    name = models.CharField(max_length=255)
    version = models.CharField(max_length=64)
    revision = models.PositiveIntegerField(
        default=1, help_text=_("Bumped when a changed file is loaded again with --force.")
    )
    is_current = models.BooleanField(
        default=True, help_text=_("New tasks use the current revision; old tasks keep theirs.")
    )
    description = models.TextField(blank=True, default="")
    template = models.JSONField(
        help_text=_("The normalised template, including sections kept verbatim.")
    )
    content_hash = models.CharField(max_length=64)
    environment = models.CharField(max_length=64, blank=True, default="")
    source = models.CharField(max_length=1024, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tasker_named_task"
        ordering = ["namespace__name", "name", "version"]
        constraints = [
            models.UniqueConstraint(
                fields=["namespace", "name", "version", "revision"],
                name="tasker_named_task_unique_revision",
            ),
            models.UniqueConstraint(
                fields=["namespace", "name", "version"],
                condition=Q(is_current=True),
                name="tasker_named_task_one_current",
            ),
        ]

    def __str__(self) -> str:
        suffix = "" if self.revision == 1 else f" (revision {self.revision})"
        return f"{self.namespace.name}/{self.name}@{self.version}{suffix}"


class NamedStep(models.Model):
    """A step definition of one template version."""

    named_task = models.ForeignKey(NamedTask, on_delete=models.CASCADE, related_name="named_steps")
    name = models.CharField(max_length=255)
    position = models.PositiveIntegerField(default=0)
    description = models.TextField(blank=True, default="")
    handler_class = models.CharField(max_length=512)
    handler_config = models.JSONField(default=dict, blank=True)
    retryable = models.BooleanField(default=True)
    max_attempts = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text=_("Total attempts, the first included. Empty: TASKER default."),
    )
    skippable = models.BooleanField(default=False)
    timeout_seconds = models.FloatField(null=True, blank=True)
    backoff = models.JSONField(null=True, blank=True)
    dependent_system = models.CharField(max_length=255, blank=True, default="")
    parent_count = models.PositiveIntegerField(default=0)

    class Meta:
        db_table = "tasker_named_step"
        ordering = ["named_task", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["named_task", "name"], name="tasker_named_step_unique_name"
            )
        ]

    def __str__(self) -> str:
        return self.name


class NamedStepEdge(models.Model):
    named_task = models.ForeignKey(NamedTask, on_delete=models.CASCADE, related_name="edges")
    from_step = models.ForeignKey(NamedStep, on_delete=models.CASCADE, related_name="child_edges")
    to_step = models.ForeignKey(NamedStep, on_delete=models.CASCADE, related_name="parent_edges")

    class Meta:
        db_table = "tasker_named_step_edge"
        constraints = [
            models.UniqueConstraint(
                fields=["from_step", "to_step"], name="tasker_named_edge_unique"
            ),
            models.CheckConstraint(
                condition=~Q(from_step=models.F("to_step")), name="tasker_named_edge_no_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.from_step_id} -> {self.to_step_id}"


class Task(models.Model):
    """One run of a template version with a JSON context."""

    # Indexed by (named_task, status) below.
    named_task = models.ForeignKey(
        NamedTask, on_delete=models.PROTECT, related_name="tasks", db_index=False
    )
    status = models.CharField(max_length=32, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    # Encrypted at rest when the template says so (security.encryption).
    context = EncryptedJSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    initiator = models.CharField(max_length=255, blank=True, default="")
    source_system = models.CharField(max_length=255, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    priority = models.IntegerField(default=0)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    identity_hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    # Counts: IntegerField with validators, not PositiveIntegerField. A database CHECK
    # per column is parsed again by every statement that updates the row (the engine's
    # run once per step); the one constraint below keeps what can go wrong.
    total_steps = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    completed_steps = models.IntegerField(
        default=0,
        validators=[MinValueValidator(0)],
        help_text=_("Steps complete or resolved manually."),
    )
    failed_steps = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "tasker_task"
        ordering = ["-created_at", "-id"]
        # Operator actions, beside the model permissions (view/add) the API checks.
        permissions = [
            ("cancel_task", "Can cancel tasks"),
            # Unmasked sensitive values (card numbers, tokens, ...) in the admin and API.
            ("view_sensitive_data", "Can view sensitive data unmasked"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["identity_hash"],
                condition=Q(identity_hash__isnull=False),
                name="tasker_task_unique_identity",
            ),
            models.CheckConstraint(
                condition=Q(completed_steps__lte=models.F("total_steps")),
                name="tasker_task_progress_bounded",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "-created_at"], name="tasker_task_status_created"),
            models.Index(fields=["named_task", "status"], name="tasker_task_template_status"),
            models.Index(fields=["-created_at"], name="tasker_task_created"),
            models.Index(
                fields=["deadline_at"],
                condition=Q(status__in=["pending", "in_progress"], deadline_at__isnull=False),
                name="tasker_task_open_deadline",
            ),
            # The sweeper's settle pass (continue_on_failure): running tasks with a
            # failed step. Small: only such tasks are in it.
            models.Index(
                fields=["id"],
                condition=Q(status__in=["pending", "in_progress"], failed_steps__gt=0),
                name="tasker_task_running_failed",
            ),
        ]

    def __str__(self) -> str:
        return f"Task {self.pk} ({self.status})"

    @property
    def progress(self) -> float:
        return self.completed_steps / self.total_steps if self.total_steps else 1.0


class WorkflowStep(models.Model):
    """One step of a task. Status fields change only through services and the engine."""

    # Indexed by the (task, name) and (task, named_step) indexes: no index of its own.
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="steps", db_index=False)
    named_step = models.ForeignKey(
        NamedStep, on_delete=models.PROTECT, related_name="workflow_steps"
    )
    name = models.CharField(max_length=255)
    # Counts: IntegerField with validators and one CHECK below (see Task.total_steps).
    position = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    status = models.CharField(max_length=32, choices=StepStatus.choices, default=StepStatus.PENDING)
    attempts = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    max_attempts = models.IntegerField(default=1, validators=[MinValueValidator(1)])
    retryable = models.BooleanField(default=True)
    skippable = models.BooleanField(default=False)
    inputs = EncryptedJSONField(default=dict, blank=True)
    results = EncryptedJSONField(null=True, blank=True)
    timeout_seconds = models.FloatField(null=True, blank=True)
    remaining_parents = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    worker_id = models.CharField(max_length=255, blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.JSONField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tasker_workflow_step"
        ordering = ["task", "position"]
        # Operator actions; ``resolve_step`` covers resolving and completing by hand.
        permissions = [
            ("retry_step", "Can retry steps"),
            ("resolve_step", "Can resolve or complete steps manually"),
            ("cancel_step", "Can cancel steps"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["task", "name"], name="tasker_step_unique_name"),
            # A parent counted twice would take remaining_parents below zero.
            models.CheckConstraint(
                condition=Q(max_attempts__gte=1, remaining_parents__gte=0),
                name="tasker_step_counts",
            ),
        ]
        indexes = [
            models.Index(
                fields=["enqueued_at"],
                condition=Q(status="enqueued"),
                name="tasker_step_enqueued",
            ),
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="waiting_for_retry"),
                name="tasker_step_retry_due",
            ),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status="in_progress"),
                name="tasker_step_lease",
            ),
            models.Index(fields=["status", "-updated_at"], name="tasker_step_status_updated"),
            # Every update of a step writes each of these indexes (a status change is
            # never a HOT update). Copying a template's edges into a new task joins its
            # steps by (task, name), the unique constraint's index: no index of its own.
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class WorkflowStepEdge(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="edges")
    # Looked up by from_step through the unique (from_step, to_step) index and by
    # to_step through tasker_step_edge_to: no index of their own (a new task writes
    # every index once per edge).
    from_step = models.ForeignKey(
        WorkflowStep, on_delete=models.CASCADE, related_name="child_edges", db_index=False
    )
    to_step = models.ForeignKey(
        WorkflowStep, on_delete=models.CASCADE, related_name="parent_edges", db_index=False
    )

    class Meta:
        db_table = "tasker_workflow_step_edge"
        constraints = [
            models.UniqueConstraint(
                fields=["from_step", "to_step"], name="tasker_step_edge_unique"
            ),
            models.CheckConstraint(
                condition=~Q(from_step=models.F("to_step")), name="tasker_step_edge_no_self"
            ),
        ]
        indexes = [models.Index(fields=["to_step"], name="tasker_step_edge_to")]

    def __str__(self) -> str:
        return f"{self.from_step_id} -> {self.to_step_id}"


class StepAttempt(models.Model):
    """Append-only: one row per attempt of a step, written when the attempt ends."""

    # Both indexed by the constraints and indexes below (no separate FK indexes:
    # every index costs a write per attempt). No database constraints either (history
    # rows are written by the engine next to the row they describe; checking them cost
    # a third of the finishing statement); deletes still cascade through the ORM.
    step = models.ForeignKey(
        WorkflowStep,
        on_delete=models.CASCADE,
        related_name="attempt_history",
        db_index=False,
        db_constraint=False,
    )
    task = models.ForeignKey(
        Task,
        on_delete=models.CASCADE,
        related_name="attempt_history",
        db_index=False,
        db_constraint=False,
    )
    # No CHECK (a history table, see task/step above): numbered from the step's count.
    attempt_number = models.IntegerField(validators=[MinValueValidator(0)])
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.FloatField(null=True, blank=True)
    outcome = models.CharField(max_length=32, choices=AttemptOutcome.choices)
    error_class = models.CharField(max_length=255, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=128, blank=True, default="")
    error_category = models.CharField(max_length=128, blank=True, default="")
    error_context = models.JSONField(default=dict, blank=True)
    retry_after = models.FloatField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        db_table = "tasker_step_attempt"
        ordering = ["step", "attempt_number"]
        constraints = [
            models.UniqueConstraint(
                fields=["step", "attempt_number"], name="tasker_attempt_unique_number"
            )
        ]
        indexes = [
            models.Index(fields=["task", "finished_at"], name="tasker_attempt_task"),
            models.Index(fields=["outcome", "-finished_at"], name="tasker_attempt_outcome"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.attempt_number} of step {self.step_id}: {self.outcome}"


class TaskEvent(models.Model):
    """Append-only log of task and step transitions, operator actions and events."""

    class Kind(models.TextChoices):
        TRANSITION = "transition", _("transition")
        ACTION = "action", _("operator action")
        EVENT = "event", _("event")

    # Indexed by (task, created_at) below.
    # No database constraints: see StepAttempt (the ORM still cascades deletes).
    task = models.ForeignKey(
        Task, on_delete=models.CASCADE, related_name="events", db_index=False, db_constraint=False
    )
    # Not indexed: a step writes two or three events, each one more index insertion.
    # A step's events are read with its task's (tasker_event_task), and they are
    # deleted with their task: steps are only ever deleted with their task.
    step = models.ForeignKey(
        WorkflowStep,
        on_delete=models.DO_NOTHING,
        null=True,
        blank=True,
        related_name="events",
        db_index=False,
        db_constraint=False,
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TRANSITION)
    name = models.CharField(max_length=128)
    from_status = models.CharField(max_length=32, blank=True, default="")
    to_status = models.CharField(max_length=32, blank=True, default="")
    actor = models.CharField(max_length=255, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tasker_task_event"
        ordering = ["created_at", "id"]
        # One index: every step writes two or three events, and no query looks events
        # up by name (a name index cost each insert and served none).
        indexes = [models.Index(fields=["task", "created_at"], name="tasker_event_task")]

    def __str__(self) -> str:
        return f"{self.name} ({self.created_at:%Y-%m-%d %H:%M:%S})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValueError("TaskEvent rows are append-only")
        super().save(*args, **kwargs)


class AuditRecord(models.Model):
    """Append-only audit trail (``security.audit_logging`` and the ``audit_log`` sink).

    Task and step are plain ids, not foreign keys: records outlive deleted tasks and
    are removed only by ``tasker_prune_audit`` once ``expires_at`` has passed.
    """

    created_at = models.DateTimeField(default=timezone.now)
    namespace = models.CharField(max_length=128, blank=True, default="")
    template = models.CharField(max_length=255, blank=True, default="")
    version = models.CharField(max_length=64, blank=True, default="")
    task_id = models.BigIntegerField(null=True, blank=True)
    step_id = models.BigIntegerField(null=True, blank=True)
    step_name = models.CharField(max_length=255, blank=True, default="")
    kind = models.CharField(max_length=16, blank=True, default="")
    event = models.CharField(max_length=128)
    from_status = models.CharField(max_length=32, blank=True, default="")
    to_status = models.CharField(max_length=32, blank=True, default="")
    actor = models.CharField(max_length=255, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "tasker_audit_record"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["task_id", "created_at"], name="tasker_audit_task"),
            models.Index(fields=["-created_at"], name="tasker_audit_created"),
            models.Index(
                fields=["expires_at"],
                condition=Q(expires_at__isnull=False),
                name="tasker_audit_expires",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} task={self.task_id} ({self.created_at:%Y-%m-%d %H:%M:%S})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValueError("AuditRecord rows are append-only")
        super().save(*args, **kwargs)


class MetricKind(models.TextChoices):
    COUNTER = "counter", _("counter")
    GAUGE = "gauge", _("gauge")
    HISTOGRAM = "histogram", _("histogram")


class MetricSeries(models.Model):
    """Cumulative state of one template-declared metric (``monitoring.metrics``).

    Counter: ``value`` is the total. Gauge: ``value`` is the last value set.
    Histogram: ``count``, ``sum`` and per-bucket counts (``bucket_counts[i]`` counts
    observations <= ``buckets[i]``, not cumulative; +Inf is ``count``).
    """

    namespace = models.CharField(max_length=128)
    template = models.CharField(max_length=255)
    name = models.CharField(max_length=128)
    kind = models.CharField(max_length=16, choices=MetricKind.choices)
    description = models.TextField(blank=True, default="")
    labels = models.JSONField(default=dict, blank=True)
    #: Canonical JSON of ``labels`` (sorted keys), part of the series' identity.
    labels_key = models.CharField(max_length=512, blank=True, default="{}")
    value = models.FloatField(default=0.0)
    count = models.BigIntegerField(default=0)
    sum = models.FloatField(default=0.0)
    buckets = models.JSONField(default=list, blank=True)
    bucket_counts = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tasker_metric_series"
        ordering = ["namespace", "template", "name", "labels_key"]
        constraints = [
            models.UniqueConstraint(
                fields=["namespace", "template", "name", "labels_key"],
                name="tasker_metric_series_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.namespace}/{self.template} {self.name}{self.labels_key}"


class MetricObservation(models.Model):
    """One recorded value of a template metric, kept for alert windows (pruned)."""

    namespace = models.CharField(max_length=128)
    template = models.CharField(max_length=255)
    name = models.CharField(max_length=128)
    value = models.FloatField()
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tasker_metric_observation"
        ordering = ["-recorded_at", "-id"]
        indexes = [
            models.Index(
                fields=["namespace", "template", "name", "recorded_at"],
                name="tasker_metric_obs_window",
            ),
            models.Index(fields=["recorded_at"], name="tasker_metric_obs_time"),
        ]

    def __str__(self) -> str:
        return f"{self.name}={self.value} ({self.recorded_at:%Y-%m-%d %H:%M:%S})"


class AlertStatus(models.TextChoices):
    FIRING = "firing", _("firing")
    RESOLVED = "resolved", _("resolved")


class Alert(models.Model):
    """A firing (or since resolved) ``monitoring.alerts`` rule of a template.

    At most one firing row per (namespace, template, name); when the condition
    clears the row is resolved and the next firing creates a new row (history).
    """

    namespace = models.CharField(max_length=128)
    template = models.CharField(max_length=255)
    named_task = models.ForeignKey(
        NamedTask, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts"
    )
    name = models.CharField(max_length=255)
    severity = models.CharField(max_length=32, default="warning")
    description = models.TextField(blank=True, default="")
    condition = models.TextField()
    status = models.CharField(
        max_length=16, choices=AlertStatus.choices, default=AlertStatus.FIRING
    )
    #: The metric values the condition saw when it last fired or held.
    values = models.JSONField(default=dict, blank=True)
    fired_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_evaluated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tasker_alert"
        ordering = ["-fired_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["namespace", "template", "name"],
                condition=Q(status="firing"),
                name="tasker_alert_one_firing",
            )
        ]
        indexes = [models.Index(fields=["status", "-fired_at"], name="tasker_alert_status")]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"
