"""Serializers of the API: input shapes (validated here, acted on by services) and outputs."""

from __future__ import annotations

import json
import math
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..conf import tasker_settings
from ..models import (
    AttemptOutcome,
    StepAttempt,
    StepStatus,
    Task,
    TaskEvent,
    TaskStatus,
    WorkflowStep,
)
from .errors import InvalidInput, PayloadTooLarge, join_path

#: JSON nested deeper than this is refused (400) before it reaches a service.
MAX_JSON_DEPTH = 64
INT32 = 2**31 - 1


# -- JSON checks ---------------------------------------------------------------------------


def json_problem(value: Any, path: str = "$") -> tuple[str, str] | None:
    """The first reason ``value`` cannot be stored as JSON, as ``(path, message)``.

    Refuses what JSON columns cannot hold on every database: NUL characters and lone
    surrogates in strings and keys, non-finite numbers, and nesting deeper than
    :data:`MAX_JSON_DEPTH`. Iterative, so deep input cannot exhaust the stack.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return where, f"nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, str):
            problem = _string_problem(item)
            if problem:
                return where, problem
        elif isinstance(item, float):
            if not math.isfinite(item):
                return where, "numbers must be finite"
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return where, "object keys must be strings"
                problem = _string_problem(key)
                if problem:
                    return where, f"key {key!r}: {problem}"
                stack.append((child, join_path(where, key), depth + 1))
        elif isinstance(item, list):
            stack.extend((child, join_path(where, i), depth + 1) for i, child in enumerate(item))
        elif item is not None and not isinstance(item, bool | int):
            return where, f"{type(item).__name__} is not JSON"
    return None


def _string_problem(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters (\\u0000)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (no lone surrogates)"
    return None


def json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def check_storable(value: Any, path: str) -> None:
    """Raise a 400 (with the exact path) for JSON that cannot be stored."""
    problem = json_problem(value, path)
    if problem is not None:
        where, message = problem
        raise InvalidInput(
            f"Invalid input: {where}: {message}", [{"path": where, "message": message}]
        )


def check_size(value: Any, path: str, setting: str) -> None:
    """Raise a 413 when ``value`` is over ``TASKER[setting]`` bytes of JSON."""
    limit = int(getattr(tasker_settings, setting))
    size = json_size(value)
    if size > limit:
        raise PayloadTooLarge(
            f"{path} is {size} bytes of JSON; the limit is {limit} bytes (TASKER['{setting}']).",
            path,
        )


# -- fields --------------------------------------------------------------------------------


class TextField(serializers.CharField):
    """A CharField that also refuses lone surrogates (databases cannot store them)."""

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if _string_problem(value):
            raise serializers.ValidationError("Must be valid Unicode (no lone surrogates).")
        return value


class NameField(TextField):
    """A namespace, template name or version: no path separators, not ``.`` or ``..``."""

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if "/" in value or "\\" in value or value in (".", ".."):
            raise serializers.ValidationError("Must not contain '/' or '\\', nor be '.' or '..'.")
        return value


@extend_schema_field({"type": "object", "additionalProperties": {}})
class JSONObjectField(serializers.JSONField):
    default_error_messages = {"not_object": "Expected a JSON object."}

    def to_internal_value(self, data: Any) -> Any:
        check_storable(data, f"$.{self.field_name}")
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            self.fail("not_object")
        return value


@extend_schema_field(
    {
        "oneOf": [
            {"type": "array", "items": {}},
            {"type": "object", "additionalProperties": {}},
        ]
    }
)
class TagsField(serializers.JSONField):
    default_error_messages = {"not_tags": "Expected a list or an object."}

    def to_internal_value(self, data: Any) -> Any:
        check_storable(data, f"$.{self.field_name}")
        value = super().to_internal_value(data)
        if not isinstance(value, list | dict):
            self.fail("not_tags")
        return value


@extend_schema_field({"type": "object", "additionalProperties": {}, "nullable": True})
class NullableJSONObjectField(serializers.JSONField):
    """Output only: a JSON object or null."""


@extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
class CountsField(serializers.DictField):
    """Output only: status -> count."""


# -- errors (schema only) ------------------------------------------------------------------


class ErrorItemSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="JSONPath into the body ($.context.x) or ?param.")
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()
    errors = ErrorItemSerializer(many=True)  # type: ignore[assignment]  # a field: popped


# -- tasks ---------------------------------------------------------------------------------


class TaskCreateSerializer(serializers.Serializer):
    namespace = NameField(max_length=128, default="default")
    name = NameField(max_length=255, help_text="Template name.")
    version = NameField(
        max_length=64,
        required=False,
        allow_null=True,
        default=None,
        help_text="Template version; the latest loaded version when omitted.",
    )
    # ``context`` is added in get_fields(): as a class attribute it would shadow
    # Serializer.context for type checkers.
    tags = TagsField(required=False, default=list)  # type: ignore[arg-type]
    initiator = TextField(
        max_length=255,
        required=False,
        allow_blank=True,
        default="",
        help_text="Who started the task; the authenticated user when omitted.",
    )
    source_system = TextField(max_length=255, required=False, allow_blank=True, default="")
    reason = TextField(max_length=10_000, required=False, allow_blank=True, default="")
    idempotency_key = TextField(
        max_length=255,
        required=False,
        allow_null=True,
        default=None,
        help_text="A second request with the same key (and template) returns the first task.",
    )
    priority = serializers.IntegerField(min_value=-INT32 - 1, max_value=INT32, default=0)

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        fields["context"] = JSONObjectField(required=False, default=dict)
        return fields

    def validate_context(self, value: dict[str, Any]) -> dict[str, Any]:
        check_size(value, "$.context", "API_MAX_CONTEXT_BYTES")
        return value

    def validate_tags(self, value: Any) -> Any:
        check_size(value, "$.tags", "API_MAX_CONTEXT_BYTES")
        return value


class TaskSerializer(serializers.ModelSerializer[Task]):
    namespace = serializers.CharField(source="named_task.namespace.name", read_only=True)
    name = serializers.CharField(source="named_task.name", read_only=True)
    version = serializers.CharField(source="named_task.version", read_only=True)
    revision = serializers.IntegerField(source="named_task.revision", read_only=True)
    status = serializers.ChoiceField(choices=TaskStatus.choices, read_only=True)
    tags = TagsField(read_only=True)
    progress = serializers.FloatField(
        read_only=True, help_text="Share of steps complete or resolved, 0 to 1."
    )

    class Meta:
        model = Task
        fields = [
            "id",
            "namespace",
            "name",
            "version",
            "revision",
            "status",
            "priority",
            "tags",
            "initiator",
            "source_system",
            "reason",
            "idempotency_key",
            "total_steps",
            "completed_steps",
            "failed_steps",
            "progress",
            "created_at",
            "updated_at",
            "started_at",
            "completed_at",
            "deadline_at",
        ]
        read_only_fields = fields


class StepSummarySerializer(serializers.Serializer):
    """A step inside a task's detail."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=StepStatus.choices)
    attempts = serializers.IntegerField()
    max_attempts = serializers.IntegerField()
    parents = serializers.ListField(child=serializers.CharField())
    waiting_reason = serializers.CharField(
        help_text="Why the step is not running or done yet; empty when done."
    )
    results = NullableJSONObjectField(allow_null=True)
    last_error = NullableJSONObjectField(allow_null=True)
    enqueued_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)


class TaskDetailSerializer(TaskSerializer):
    step_counts = serializers.SerializerMethodField(help_text="Steps by status.")
    steps = serializers.SerializerMethodField()
    steps_truncated = serializers.SerializerMethodField(
        help_text="True when the task has more steps than TASKER['API_TASK_DETAIL_MAX_STEPS']; "
        "page through tasks/{id}/steps/ for all of them."
    )

    class Meta(TaskSerializer.Meta):
        fields = [*TaskSerializer.Meta.fields, "context", "step_counts", "steps", "steps_truncated"]
        read_only_fields = fields

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        fields = super().get_fields()
        fields["context"] = JSONObjectField(read_only=True)
        return fields

    @extend_schema_field(CountsField())
    def get_step_counts(self, task: Task) -> dict[str, int]:
        return dict(self.context.get("step_counts", {}))

    @extend_schema_field(StepSummarySerializer(many=True))
    def get_steps(self, task: Task) -> list[dict[str, Any]]:
        steps = self.context.get("steps", [])
        return list(StepSummarySerializer(steps, many=True).data)

    def get_steps_truncated(self, task: Task) -> bool:
        return bool(self.context.get("steps_truncated", False))


class ReasonSerializer(serializers.Serializer):
    reason = TextField(
        max_length=10_000,
        required=False,
        allow_blank=True,
        default="",
        help_text="Recorded in the task's events with the user.",
    )


class RetryFailedResultSerializer(serializers.Serializer):
    task = TaskSerializer()
    retried_steps = serializers.ListField(child=serializers.IntegerField())


class TaskEventSerializer(serializers.ModelSerializer[TaskEvent]):
    kind = serializers.ChoiceField(choices=TaskEvent.Kind.choices, read_only=True)
    step_name = serializers.CharField(source="step.name", read_only=True, allow_null=True)
    payload = JSONObjectField(read_only=True)

    class Meta:
        model = TaskEvent
        fields = [
            "id",
            "name",
            "kind",
            "step",
            "step_name",
            "from_status",
            "to_status",
            "actor",
            "reason",
            "payload",
            "created_at",
        ]
        read_only_fields = fields


# -- steps ---------------------------------------------------------------------------------


class StepAttemptSerializer(serializers.ModelSerializer[StepAttempt]):
    outcome = serializers.ChoiceField(choices=AttemptOutcome.choices, read_only=True)
    error_context = JSONObjectField(read_only=True)

    class Meta:
        model = StepAttempt
        fields = [
            "attempt_number",
            "outcome",
            "started_at",
            "finished_at",
            "duration_ms",
            "error_class",
            "error_message",
            "error_code",
            "error_category",
            "error_context",
            "retry_after",
            "worker",
        ]
        read_only_fields = fields


class StepSerializer(serializers.ModelSerializer[WorkflowStep]):
    namespace = serializers.CharField(source="task.named_task.namespace.name", read_only=True)
    task_name = serializers.CharField(source="task.named_task.name", read_only=True)
    status = serializers.ChoiceField(choices=StepStatus.choices, read_only=True)
    results = NullableJSONObjectField(read_only=True, allow_null=True)
    last_error = NullableJSONObjectField(read_only=True, allow_null=True)

    class Meta:
        model = WorkflowStep
        fields = [
            "id",
            "task",
            "namespace",
            "task_name",
            "name",
            "position",
            "status",
            "attempts",
            "max_attempts",
            "retryable",
            "skippable",
            "results",
            "last_error",
            "worker_id",
            "enqueued_at",
            "claimed_at",
            "started_at",
            "completed_at",
            "next_attempt_at",
            "updated_at",
        ]
        read_only_fields = fields


class StepDetailSerializer(StepSerializer):
    inputs = JSONObjectField(read_only=True)
    handler_class = serializers.CharField(source="named_step.handler_class", read_only=True)
    task_status = serializers.ChoiceField(
        source="task.status", choices=TaskStatus.choices, read_only=True
    )
    parents = serializers.SerializerMethodField()
    children = serializers.SerializerMethodField()
    waiting_reason = serializers.SerializerMethodField(
        help_text="Why the step is not running or done yet; empty when done."
    )
    attempt_history = StepAttemptSerializer(many=True, read_only=True)

    class Meta(StepSerializer.Meta):
        fields = [
            *StepSerializer.Meta.fields,
            "inputs",
            "handler_class",
            "timeout_seconds",
            "lease_expires_at",
            "task_status",
            "parents",
            "children",
            "waiting_reason",
            "attempt_history",
        ]
        read_only_fields = fields

    def get_parents(self, step: WorkflowStep) -> list[str]:
        return list(self.context.get("parents", []))

    def get_children(self, step: WorkflowStep) -> list[str]:
        return list(self.context.get("children", []))

    def get_waiting_reason(self, step: WorkflowStep) -> str:
        return str(self.context.get("waiting_reason", ""))


class RetryStepSerializer(ReasonSerializer):
    reset_downstream = serializers.BooleanField(
        default=False,
        help_text="Also reset the steps that depend on this one (allows retrying a finished step).",
    )


class ResolveStepSerializer(ReasonSerializer):
    results = JSONObjectField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Results the children see; the step keeps its own when omitted.",
    )

    def validate_results(self, value: Any) -> Any:
        if value is not None:
            check_size(value, "$.results", "API_MAX_RESULTS_BYTES")
        return value


class CompleteStepSerializer(ReasonSerializer):
    results = JSONObjectField(help_text="The step's results.")

    def validate_results(self, value: Any) -> Any:
        check_size(value, "$.results", "API_MAX_RESULTS_BYTES")
        return value


# -- templates and handlers ----------------------------------------------------------------


class NamespaceSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    created_at = serializers.DateTimeField()
    template_count = serializers.IntegerField(help_text="Named tasks (templates) loaded.")


class TemplateVersionSerializer(serializers.Serializer):
    version = serializers.CharField()
    revision = serializers.IntegerField()
    description = serializers.CharField()
    environment = serializers.CharField()
    step_count = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class TemplateSerializer(serializers.Serializer):
    namespace = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField(help_text="Of the latest version.")
    latest_version = serializers.CharField()
    versions = TemplateVersionSerializer(many=True, help_text="Current revisions, newest first.")


class GraphNodeSerializer(serializers.Serializer):
    name = serializers.CharField()
    status = serializers.CharField(allow_null=True, help_text="Null in a template's graph.")
    id = serializers.IntegerField(allow_null=True, help_text="Step id (null in a template).")
    url = serializers.CharField(allow_null=True, help_text="The step's API URL.")
    level = serializers.IntegerField(help_text="Dependency level: 0 has no parents.")


class GraphEdgeSerializer(serializers.Serializer):
    parent = serializers.CharField()  # type: ignore[assignment]  # a field: popped
    child = serializers.CharField()


class GraphSerializer(serializers.Serializer):
    nodes = GraphNodeSerializer(many=True)
    edges = GraphEdgeSerializer(many=True)
    levels = serializers.ListField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Step names by dependency level.",
    )


class TemplateStepSerializer(serializers.Serializer):
    name = serializers.CharField()
    position = serializers.IntegerField()
    description = serializers.CharField()
    handler_class = serializers.CharField()
    handler_config_keys = serializers.ListField(
        child=serializers.CharField(), help_text="Config values are not shown (secrets)."
    )
    depends_on = serializers.ListField(child=serializers.CharField())
    retryable = serializers.BooleanField()
    max_attempts = serializers.IntegerField(allow_null=True)
    skippable = serializers.BooleanField()
    timeout_seconds = serializers.FloatField(allow_null=True)
    backoff = NullableJSONObjectField(allow_null=True)
    dependent_system = serializers.CharField()


class TemplateDetailSerializer(serializers.Serializer):
    namespace = serializers.CharField()
    name = serializers.CharField()
    version = serializers.CharField()
    revision = serializers.IntegerField()
    description = serializers.CharField()
    environment = serializers.CharField()
    content_hash = serializers.CharField()
    context_schema = NullableJSONObjectField(
        allow_null=True, help_text="JSON Schema the task context must match."
    )
    steps = TemplateStepSerializer(many=True)
    graph = GraphSerializer()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class HandlerSerializer(serializers.Serializer):
    handler_name = serializers.CharField()
    handler_class = serializers.CharField(help_text="Dotted path of the class.")
    namespace = serializers.CharField()
    version = serializers.CharField()
    aliases = serializers.ListField(child=serializers.CharField())
    config_keys = serializers.ListField(
        child=serializers.CharField(), help_text="Config values are not shown (secrets)."
    )
    capabilities = serializers.ListField(child=serializers.CharField())
    description = serializers.CharField()
    source = serializers.CharField(  # type: ignore[assignment]  # a field: popped
        help_text="class, register, settings or file."
    )
    registered = serializers.BooleanField()
