"""Creating tasks: validate the context, then insert the task, its steps and edges.

Creation costs a constant number of statements whatever the number of steps: the
steps and edges are copied from the template's ``NamedStep`` rows with
``INSERT ... SELECT`` (I9).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from jsonschema import Draft202012Validator

from ..conf import tasker_settings
from ..exceptions import TaskQueueFull, TaskValidationError
from ..expressions import compile_condition
from ..models import (
    NamedStep,
    NamedStepEdge,
    NamedTask,
    StepStatus,
    Task,
    TaskStatus,
    WorkflowStep,
    WorkflowStepEdge,
)
from ..security.crypto import check_encryption_ready, seal_context
from .templates import find_template

logger = logging.getLogger(__name__)


def create_task(
    name: str,
    namespace: str = "default",
    version: str | None = None,
    context: dict[str, Any] | None = None,
    tags: list[Any] | dict[str, Any] | None = None,
    initiator: str | None = None,
    source_system: str | None = None,
    reason: str | None = None,
    idempotency_key: str | None = None,
    priority: int | None = None,
) -> Task:
    """Create a task of a template and enqueue its root steps.

    Raises :class:`~tasker_django.exceptions.TemplateNotFound` for an unknown
    template and :class:`~tasker_django.exceptions.TaskValidationError` (with
    every problem and its JSON path) for a bad context. With ``idempotency_key``,
    a second call for the same template returns the task of the first call.
    ``priority`` defaults to the template's ``task_config.priority`` (``high`` is
    10, see ``engine.policy.PRIORITIES``). When the template already runs its
    ``max_concurrent_workflows`` tasks, the task is created ``waiting``; when
    ``queue_size`` tasks already wait, :class:`~tasker_django.exceptions.TaskQueueFull`
    is raised.
    """
    named_task = find_template(name, namespace=namespace, version=version)
    context = {} if context is None else context
    validate_context(named_task, context)
    tags = _normalise_tags(named_task, tags)
    check_encryption_ready(named_task.template)  # no keys: refuse, never store plain
    identity_hash = None
    if idempotency_key is not None:
        if not isinstance(idempotency_key, str) or not idempotency_key:
            raise TaskValidationError("idempotency_key must be a non-empty string")
        identity_hash = hashlib.sha256(
            f"{namespace}\0{name}\0{idempotency_key}".encode()
        ).hexdigest()
        existing = Task.objects.filter(identity_hash=identity_hash).first()
        if existing is not None:
            return existing
    try:
        with transaction.atomic():
            return _insert_task(
                named_task,
                # Sealed: encrypted on INSERT when the template says so (security.encryption).
                context=seal_context(named_task.template, context),
                tags=tags,
                initiator=initiator or "",
                source_system=source_system or "",
                reason=reason or "",
                idempotency_key=idempotency_key,
                identity_hash=identity_hash,
                priority=_priority(named_task, priority),
            )
    except IntegrityError:
        if identity_hash is None:
            raise
        # Another request with the same key won the race.
        return Task.objects.get(identity_hash=identity_hash)


def validate_context(named_task: NamedTask, context: Any) -> None:
    """Raise TaskValidationError listing every schema violation of ``context``."""
    if not isinstance(context, dict):
        raise TaskValidationError(
            "The task context must be a JSON object",
            [{"path": "$", "message": f"expected an object, got {type(context).__name__}"}],
        )
    try:
        json.dumps(context, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TaskValidationError(
            "The task context must be JSON", [{"path": "$", "message": str(exc)}]
        ) from None
    schema = named_task.template.get("schema")
    if schema:
        _check_schema(named_task, schema, context)
    _check_business_rules(named_task, context)


def _check_business_rules(named_task: NamedTask, context: dict[str, Any]) -> None:
    """``constraints.business_rules``: a rule whose names the context has must hold.

    A rule names context fields (``payment_amount >= 1``); a rule whose fields are
    missing from the context does not apply (the JSON Schema decides what is
    required). Violations carry the rule's ``error_message``.
    """
    rules = ((named_task.template.get("sections") or {}).get("constraints") or {}).get(
        "business_rules"
    ) or []
    errors = []
    for rule in rules:
        if not isinstance(rule, dict) or not rule.get("rule"):
            continue
        condition = compile_condition(rule["rule"])
        if condition.names <= set(context) and not condition.evaluate(context):
            errors.append(
                {
                    "path": "$." + sorted(condition.names)[0] if condition.names else "$",
                    "message": rule.get("error_message") or f"rule {rule['rule']!r} is not met",
                    "rule": rule.get("name") or rule["rule"],
                }
            )
    if errors:
        raise TaskValidationError(f"The context breaks the business rules of {named_task}", errors)


def _check_schema(named_task: NamedTask, schema: dict[str, Any], context: Any) -> None:
    errors = sorted(
        Draft202012Validator(schema).iter_errors(context),
        key=lambda e: (list(map(str, e.absolute_path)), e.message),
    )
    if errors:
        raise TaskValidationError(
            f"The context does not match the schema of {named_task}",
            [{"path": e.json_path, "message": e.message} for e in errors],
        )


def _normalise_tags(named_task: NamedTask, tags: Any) -> list[Any] | dict[str, Any]:
    template_tags = (named_task.template.get("task_config") or {}).get("tags") or []
    if tags is None:
        tags = []
    if not isinstance(tags, list | dict):
        raise TaskValidationError(
            "tags must be a list or an object",
            [{"path": "$.tags", "message": f"got {type(tags).__name__}"}],
        )
    if isinstance(tags, list):
        return [*tags, *(t for t in template_tags if t not in tags)]
    return tags


def _priority(named_task: NamedTask, priority: Any) -> int:
    from ..engine.policy import priority_value

    if priority is None:
        priority = (named_task.template.get("task_config") or {}).get("priority")
    return priority_value(priority)


def _must_wait(named_task: NamedTask) -> bool:
    from ..engine import limits
    from ..engine.policy import policy_for

    policy = policy_for(named_task.pk, named_task.content_hash)
    if policy.max_workflows is None:
        return False
    try:
        return limits.must_wait(named_task, policy)
    except limits.QueueFull as exc:
        raise TaskQueueFull(
            str(exc), [{"path": "$", "message": "the template's queue of waiting tasks is full"}]
        ) from None


def _insert_task(named_task: NamedTask, **fields: Any) -> Task:
    from ..engine.limits import deadline

    now = timezone.now()
    total = len(named_task.template.get("steps") or [])
    waiting = _must_wait(named_task)
    task = Task.objects.create(
        named_task=named_task,
        total_steps=total,
        created_at=now,
        updated_at=now,
        status=TaskStatus.WAITING if waiting else TaskStatus.PENDING,
        deadline_at=None if waiting else deadline(named_task.template, now),
        **fields,
    )
    ops = connection.ops
    stamp = ops.adapt_datetimefield_value(now)
    step_table = WorkflowStep._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {step_table}
                (task_id, named_step_id, name, position, status, attempts, max_attempts,
                 retryable, skippable, inputs, timeout_seconds, remaining_parents,
                 enqueued_at, worker_id, updated_at)
            SELECT %s, ns.id, ns.name, ns.position,
                   CASE WHEN ns.parent_count = 0 THEN %s ELSE %s END,
                   0,
                   CASE WHEN ns.retryable THEN COALESCE(ns.max_attempts, %s) ELSE 1 END,
                   ns.retryable, ns.skippable, '{{}}',
                   COALESCE(ns.timeout_seconds, %s),
                   ns.parent_count,
                   CASE WHEN ns.parent_count = 0 AND %s THEN %s ELSE NULL END,
                   '', %s
            FROM {NamedStep._meta.db_table} ns
            WHERE ns.named_task_id = %s
            """,  # noqa: S608  (table names come from model meta, values are parameters)
            [
                task.pk,
                StepStatus.PENDING.value if waiting else StepStatus.ENQUEUED.value,
                StepStatus.PENDING.value,
                int(tasker_settings.DEFAULT_MAX_ATTEMPTS),
                tasker_settings.DEFAULT_STEP_TIMEOUT,
                not waiting,
                stamp,
                stamp,
                named_task.pk,
            ],
        )
        cursor.execute(
            f"""
            INSERT INTO {WorkflowStepEdge._meta.db_table} (task_id, from_step_id, to_step_id)
            SELECT %s, p.id, c.id
            FROM {NamedStepEdge._meta.db_table} e
            JOIN {NamedStep._meta.db_table} nf ON nf.id = e.from_step_id
            JOIN {NamedStep._meta.db_table} nt ON nt.id = e.to_step_id
            -- A step has its named step's name (above); (task_id, name) is unique.
            JOIN {step_table} p ON p.task_id = %s AND p.name = nf.name
            JOIN {step_table} c ON c.task_id = %s AND c.name = nt.name
            WHERE e.named_task_id = %s
            """,  # noqa: S608
            [task.pk, task.pk, task.pk, named_task.pk],
        )
    root_ids = list(
        WorkflowStep.objects.filter(task=task, status=StepStatus.ENQUEUED).values_list(
            "pk", flat=True
        )
    )
    from ..engine.events import Event, emit_on_commit, template_ref

    emit_on_commit(  # stored, and audited when the template says so (not signalled)
        [
            Event(
                name="task.created",
                task_id=task.pk,
                step_id=None,
                to_status=task.status,
                actor=task.initiator,
                reason=task.reason,
                payload={
                    "named_task": str(named_task),
                    "steps": total,
                    "root_steps": len(root_ids),
                },
                signal=False,
                template_ref=template_ref(named_task),
            )
        ],
        now,
    )
    from ..engine import dispatch
    from ..engine.policy import policy_for

    batch_size = policy_for(named_task.pk, named_task.content_hash).batch_size
    dispatch.kick_steps(root_ids, priority=task.priority, batch_size=batch_size)
    logger.info("task %s created from %s with %s steps", task.pk, named_task, total)
    return task
