"""Views of tasks, steps, templates, namespaces and handlers.

Thin: a serializer validates the input, one ``services`` function acts, a serializer
renders the result. Nothing here writes a status field.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, mixins, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from ..conf import tasker_settings
from ..definitions import version_key
from ..engine import clock
from ..exceptions import TaskValidationError, TemplateNotFound
from ..handlers.registry import registry
from ..models import (
    NamedStep,
    NamedStepEdge,
    NamedTask,
    Namespace,
    StepAttempt,
    Task,
    TaskEvent,
    WorkflowStep,
)
from ..security.access import for_request
from ..security.api import check_create
from ..services import operations
from ..services.inspect import step_reason, step_states
from ..services.tasks import create_task
from . import serializers as s
from .base import TaskerViewMixin, api_url
from .errors import InvalidInput
from .filters import (
    EventFilter,
    StepFilter,
    TaskerFilterBackend,
    TaskFilter,
    TaskStepFilter,
    TemplateFilter,
)
from .graphs import template_graph
from .lookups import (
    TASK_ID,
    TEMPLATE_PARAMS,
    VERSION,
    check_path_names,
    fake,
    parse_id,
    template_or_404,
    visible_task_or_404,
    visible_tasks,
    visible_templates,
)
from .permissions import CANCEL, CREATE, RESOLVE, RETRY, VIEW, namespace_allowed, visible_namespaces

# -- tasks ---------------------------------------------------------------------------------


def task_detail(task: Task, request: Request) -> dict[str, Any]:
    """The task with its steps' status, attempts, results, last error and waiting reason.

    Three queries whatever the task size: steps and edges (waiting reasons), and the
    steps' results and timestamps (at most ``API_TASK_DETAIL_MAX_STEPS`` of them).
    """
    limit = int(tasker_settings.API_TASK_DETAIL_MAX_STEPS)
    states = step_states(task)
    extra = {
        row["pk"]: row
        for row in WorkflowStep.objects.filter(task=task)
        .order_by("position", "pk")
        .values("pk", "results", "enqueued_at", "started_at", "completed_at", "next_attempt_at")[
            :limit
        ]
    }
    steps = [
        {
            "id": state.id,
            "name": state.name,
            "status": state.status,
            "attempts": state.attempts,
            "max_attempts": state.max_attempts,
            "parents": list(state.parents),
            "waiting_reason": state.reason,
            "last_error": state.last_error,
            **{k: v for k, v in extra.get(state.id, {}).items() if k != "pk"},
        }
        for state in states[:limit]
    ]
    context = {
        "request": request,
        "steps": steps,
        "step_counts": dict(Counter(state.status for state in states)),
        "steps_truncated": len(states) > limit,
    }
    return dict(s.TaskDetailSerializer(task, context=context).data)


@extend_schema_view(
    list=extend_schema(summary="List tasks"),
    retrieve=extend_schema(
        summary="A task with its steps, progress, results and waiting reasons",
        responses=s.TaskDetailSerializer,
    ),
)
class TaskViewSet(
    TaskerViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet[Task],
):
    queryset = Task.objects.select_related("named_task__namespace")
    serializer_class = s.TaskSerializer
    filterset_class = TaskFilter
    ordering_fields = ["id", "created_at", "updated_at", "completed_at", "priority", "status"]
    ordering = ["-created_at", "-id"]
    # Any segment: a non-number is a JSON 404 from the view, not Django's HTML one.
    lookup_value_regex = "[^/]+"

    required_permissions = {
        "create": ("add_task",),
        "cancel": ("cancel_task",),
        "retry_failed": ("retry_step",),
        "*": ("view_task",),
    }
    namespace_actions = {"cancel": CANCEL, "retry_failed": RETRY}

    def get_object(self) -> Any:
        self.kwargs["pk"] = parse_id(self.kwargs["pk"])
        return super().get_object()

    def get_queryset(self) -> QuerySet[Task]:
        if fake(self):
            return Task.objects.none()
        return visible_tasks(self.request)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(task_detail(self.get_object(), request))

    @extend_schema(
        summary="Start a workflow",
        description="Creates a task of a template and enqueues its first steps. With an "
        "`idempotency_key` already used for the same template, answers 200 with that task.",
        request=s.TaskCreateSerializer,
        responses={201: s.TaskDetailSerializer, 200: s.TaskDetailSerializer},
        examples=[
            OpenApiExample(
                "A payment of the example project",
                request_only=True,
                value={
                    "namespace": "payments",
                    "name": "linear_payment",
                    "context": {"amount": 49.99, "currency": "USD", "customer_id": 42},
                    "idempotency_key": "order-1001",
                    "tags": ["web"],
                },
            )
        ],
    )
    def create(self, request: Request) -> Response:
        serializer = s.TaskCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        namespace, name, version = data["namespace"], data["name"], data["version"]
        if not namespace_allowed(request, namespace, CREATE):
            raise PermissionDenied()
        check_create(request, namespace, name, version)  # access_control, encryption keys
        key = data["idempotency_key"]
        existed = key is not None and (
            Task.objects.filter(
                idempotency_key=key,
                named_task__namespace__name=namespace,
                named_task__name=name,
            ).exists()
        )
        try:
            task = create_task(
                name,
                namespace=namespace,
                version=version,
                context=data["context"],
                tags=data["tags"],
                initiator=data["initiator"] or request.user.get_username(),
                source_system=data["source_system"],
                reason=data["reason"],
                idempotency_key=key,
                priority=data["priority"],
            )
        except TaskValidationError as exc:
            # The service's paths are relative to the context; the client's to the body.
            errors = [{**e, "path": "$.context" + str(e.get("path", "$"))[1:]} for e in exc.errors]
            raise InvalidInput(exc.message, errors) from None
        except TemplateNotFound:
            wanted = f"{namespace}/{name}" + (f"@{version}" if version else "")
            message = f"No task template {wanted} is loaded."
            raise InvalidInput(
                message, [{"path": "$.name", "message": message}], code="template_not_found"
            )
        task = Task.objects.select_related("named_task__namespace").get(pk=task.pk)
        return Response(
            task_detail(task, request),
            status=200 if existed else 201,
            headers={"Location": api_url(request, "task-detail", task.pk)},
        )

    @extend_schema(summary="Cancel a task", request=s.ReasonSerializer, responses=s.TaskSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        task = self.get_object()
        body = s.ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        operations.cancel_task(task.pk, actor=request.user, reason=body.validated_data["reason"])
        return Response(s.TaskSerializer(self.get_object()).data)

    @extend_schema(
        summary="Retry every failed step of a task",
        request=s.ReasonSerializer,
        responses=s.RetryFailedResultSerializer,
    )
    @action(detail=True, methods=["post"], url_path="retry-failed")
    def retry_failed(self, request: Request, pk: str) -> Response:
        task = self.get_object()
        body = s.ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        ids = operations.retry_failed_steps(
            task.pk, actor=request.user, reason=body.validated_data["reason"]
        )
        result = {"task": self.get_object(), "retried_steps": ids}
        return Response(s.RetryFailedResultSerializer(result).data)


@extend_schema(summary="The event timeline of a task", parameters=[TASK_ID])
class TaskEventListView(TaskerViewMixin, generics.ListAPIView[TaskEvent]):
    serializer_class = s.TaskEventSerializer
    filterset_class = EventFilter
    ordering_fields = ["created_at", "id"]
    ordering = ["created_at", "id"]
    required_permissions = {"*": ("view_task",)}

    def get_queryset(self) -> QuerySet[TaskEvent]:
        if fake(self):
            return TaskEvent.objects.none()
        task = visible_task_or_404(self.request, self.kwargs["task_id"])
        return TaskEvent.objects.filter(task=task).select_related("step")


@extend_schema(summary="The steps of a task", parameters=[TASK_ID])
class TaskStepListView(TaskerViewMixin, generics.ListAPIView[WorkflowStep]):
    serializer_class = s.StepSerializer
    filterset_class = TaskStepFilter
    ordering_fields = ["position", "id", "updated_at", "attempts"]
    ordering = ["position", "id"]
    required_permissions = {"*": ("view_task",)}

    def get_queryset(self) -> QuerySet[WorkflowStep]:
        if fake(self):
            return WorkflowStep.objects.none()
        task = visible_task_or_404(self.request, self.kwargs["task_id"])
        return WorkflowStep.objects.filter(task=task).select_related("task__named_task__namespace")


# -- steps ---------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="List steps of all tasks"),
    retrieve=extend_schema(
        summary="A step with its attempt history", responses=s.StepDetailSerializer
    ),
)
class StepViewSet(
    TaskerViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet[WorkflowStep],
):
    queryset = WorkflowStep.objects.select_related("task__named_task__namespace")
    serializer_class = s.StepSerializer
    filterset_class = StepFilter
    ordering_fields = ["id", "position", "updated_at", "attempts", "status"]
    ordering = ["-updated_at", "-id"]
    # Any segment: a non-number is a JSON 404 from the view, not Django's HTML one.
    lookup_value_regex = "[^/]+"

    required_permissions = {
        "retry": ("retry_step",),
        "resolve": ("resolve_step",),
        "complete": ("resolve_step",),
        "cancel": ("cancel_step",),
        "*": ("view_workflowstep",),
    }
    namespace_actions = {"retry": RETRY, "resolve": RESOLVE, "complete": RESOLVE, "cancel": CANCEL}

    def get_object(self) -> Any:
        self.kwargs["pk"] = parse_id(self.kwargs["pk"])
        return super().get_object()

    def get_queryset(self) -> QuerySet[WorkflowStep]:
        if fake(self):
            return WorkflowStep.objects.none()
        qs = for_request(self.request).exclude_hidden(super().get_queryset(), "task__named_task_id")
        names = visible_namespaces(self.request)
        return qs if names is None else qs.filter(task__named_task__namespace__name__in=names)

    def _detail(self, step: WorkflowStep | None = None) -> Response:
        pk = self.get_object().pk if step is None else step.pk
        step = (
            WorkflowStep.objects.select_related("task__named_task__namespace", "named_step")
            .prefetch_related(
                Prefetch("attempt_history", StepAttempt.objects.order_by("attempt_number"))
            )
            .get(pk=pk)
        )
        parents = list(
            WorkflowStep.objects.filter(child_edges__to_step=step)
            .order_by("position")
            .only("name", "status")
        )
        children = list(
            WorkflowStep.objects.filter(parent_edges__from_step=step)
            .order_by("position")
            .values_list("name", flat=True)
        )
        context = {
            "request": self.request,
            "parents": [p.name for p in parents],
            "children": children,
            "waiting_reason": step_reason(step.task, step, parents, clock.now()),
        }
        return Response(s.StepDetailSerializer(step, context=context).data)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._detail()

    @extend_schema(
        summary="Retry a step (optionally with the steps downstream of it)",
        request=s.RetryStepSerializer,
        responses=s.StepDetailSerializer,
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        return self._operate(
            s.RetryStepSerializer,
            operations.retry_step,
            "reason",
            "reset_downstream",
        )

    @extend_schema(
        summary="Resolve a step by hand (optionally with results)",
        request=s.ResolveStepSerializer,
        responses=s.StepDetailSerializer,
    )
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, pk: str) -> Response:
        return self._operate(s.ResolveStepSerializer, operations.resolve_step, "reason", "results")

    @extend_schema(
        summary="Complete a step by hand with results",
        request=s.CompleteStepSerializer,
        responses=s.StepDetailSerializer,
    )
    @action(detail=True, methods=["post"])
    def complete(self, request: Request, pk: str) -> Response:
        return self._operate(
            s.CompleteStepSerializer, operations.complete_step, "reason", "results"
        )

    @extend_schema(
        summary="Cancel a step", request=s.ReasonSerializer, responses=s.StepDetailSerializer
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        return self._operate(s.ReasonSerializer, operations.cancel_step, "reason")

    def _operate(self, serializer: type[Any], operation: Any, *fields: str) -> Response:
        """Validate the body, run the operator action on the step as the request's user
        (with the body's ``fields``), answer the step's detail."""
        step = self.get_object()
        body = serializer(data=self.request.data)
        body.is_valid(raise_exception=True)
        values = {name: body.validated_data[name] for name in fields}
        operation(step.pk, actor=self.request.user, **values)
        return self._detail(step)


# -- namespaces, templates, handlers -------------------------------------------------------


@extend_schema(summary="Namespaces of templates")
class NamespaceListView(TaskerViewMixin, generics.ListAPIView[Namespace]):
    serializer_class = s.NamespaceSerializer
    filter_backends: list[Any] = []
    required_permissions = {"*": ("view_namedtask",)}

    def get_queryset(self) -> QuerySet[Namespace]:
        if fake(self):
            return Namespace.objects.none()
        qs = Namespace.objects.annotate(
            template_count=Count(
                "named_tasks__name", filter=Q(named_tasks__is_current=True), distinct=True
            )
        ).order_by("name")
        names = visible_namespaces(self.request)
        return qs if names is None else qs.filter(name__in=names)


def _versions(named_tasks: list[NamedTask]) -> list[dict[str, Any]]:
    """Versions newest first, with step counts (one query)."""
    counts = dict(
        NamedStep.objects.filter(named_task__in=named_tasks)
        .values("named_task_id")
        .annotate(n=Count("id"))
        .values_list("named_task_id", "n")
    )
    ordered = sorted(named_tasks, key=lambda t: version_key(t.version), reverse=True)
    return [
        {
            "version": t.version,
            "revision": t.revision,
            "description": t.description,
            "environment": t.environment,
            "step_count": counts.get(t.pk, 0),
            "created_at": t.created_at,
            "updated_at": t.updated_at,
        }
        for t in ordered
    ]


def _template_group(named_tasks: list[NamedTask]) -> dict[str, Any]:
    versions = _versions(named_tasks)
    latest = max(named_tasks, key=lambda t: version_key(t.version))
    return {
        "namespace": latest.namespace.name,
        "name": latest.name,
        "description": latest.description,
        "latest_version": latest.version,
        "versions": versions,
    }


@extend_schema(summary="Templates (named tasks) with their versions")
class TemplateListView(TaskerViewMixin, generics.ListAPIView[NamedTask]):
    serializer_class = s.TemplateSerializer
    filterset_class = TemplateFilter
    filter_backends = [TaskerFilterBackend]
    required_permissions = {"*": ("view_namedtask",)}

    def get_queryset(self) -> QuerySet[NamedTask]:
        if fake(self):
            return NamedTask.objects.none()
        return visible_templates(self.request)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        current = self.filter_queryset(self.get_queryset())
        groups = (
            current.values_list("namespace__name", "name")
            .order_by("namespace__name", "name")
            .distinct()
        )
        page = self.paginate_queryset(groups)
        keys = list(page or [])
        rows = current.filter(
            namespace__name__in={k[0] for k in keys}, name__in={k[1] for k in keys}
        )
        by_key: dict[tuple[str, str], list[NamedTask]] = {}
        for row in rows:
            by_key.setdefault((row.namespace.name, row.name), []).append(row)
        data = [_template_group(by_key[key]) for key in keys if key in by_key]
        return self.get_paginated_response(s.TemplateSerializer(data, many=True).data)


class TemplateView(TaskerViewMixin, generics.GenericAPIView[NamedTask]):
    serializer_class = s.TemplateSerializer
    required_permissions = {"*": ("view_namedtask",)}

    @extend_schema(
        summary="One template's versions",
        parameters=TEMPLATE_PARAMS,
        operation_id="templates_versions_retrieve",
    )
    def get(self, request: Request, namespace: str, name: str) -> Response:
        check_path_names(namespace, name)
        rows = list(visible_templates(request).filter(namespace__name=namespace, name=name))
        if not rows:
            raise NotFound()
        return Response(s.TemplateSerializer(_template_group(rows)).data)


@extend_schema(summary="A template version: steps, context schema and graph")
class TemplateVersionView(TaskerViewMixin, generics.GenericAPIView[NamedTask]):
    serializer_class = s.TemplateDetailSerializer
    required_permissions = {"*": ("view_namedtask",)}

    @extend_schema(
        parameters=[*TEMPLATE_PARAMS, VERSION], operation_id="templates_version_retrieve"
    )
    def get(self, request: Request, namespace: str, name: str, version: str) -> Response:
        named_task = template_or_404(request, namespace, name, version)
        steps = list(NamedStep.objects.filter(named_task=named_task).order_by("position"))
        parents: dict[int, list[str]] = {}
        for child_id, parent_name in NamedStepEdge.objects.filter(
            named_task=named_task
        ).values_list("to_step_id", "from_step__name"):
            parents.setdefault(child_id, []).append(parent_name)
        data = {
            "namespace": named_task.namespace.name,
            "name": named_task.name,
            "version": named_task.version,
            "revision": named_task.revision,
            "description": named_task.description,
            "environment": named_task.environment,
            "content_hash": named_task.content_hash,
            "context_schema": (named_task.template or {}).get("schema"),
            "steps": [
                {
                    "name": step.name,
                    "position": step.position,
                    "description": step.description,
                    "handler_class": step.handler_class,
                    "handler_config_keys": sorted(map(str, step.handler_config or {})),
                    "depends_on": parents.get(step.pk, []),
                    "retryable": step.retryable,
                    "max_attempts": step.max_attempts,
                    "skippable": step.skippable,
                    "timeout_seconds": step.timeout_seconds,
                    "backoff": step.backoff,
                    "dependent_system": step.dependent_system,
                }
                for step in steps
            ],
            "graph": template_graph(named_task),
            "created_at": named_task.created_at,
            "updated_at": named_task.updated_at,
        }
        return Response(s.TemplateDetailSerializer(data).data)


@extend_schema(
    summary="Registered step handlers with their metadata",
    parameters=[
        OpenApiParameter("namespace", OpenApiTypes.STR, description="Only this namespace.")
    ],
)
class HandlerListView(TaskerViewMixin, generics.ListAPIView[Any]):
    serializer_class = s.HandlerSerializer
    filter_backends: list[Any] = []
    required_permissions = {"*": ("view_namedtask",)}

    def get_queryset(self) -> Any:
        if fake(self):
            return []
        namespace = self.request.query_params.get("namespace") or None
        return [
            entry.metadata
            for entry in registry.list(namespace)
            if namespace_allowed(self.request, entry.namespace, VIEW)
        ]
