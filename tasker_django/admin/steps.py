"""The step page (every attempt), step actions, and the read-only history lists."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..engine import clock
from ..models import (
    DONE_STEP_STATUSES,
    StepAttempt,
    StepStatus,
    TaskEvent,
    TaskStatus,
    WorkflowStep,
)
from ..services import operations
from ..services.inspect import step_reason
from . import display
from .base import (
    PERM_CANCEL_STEP,
    PERM_RESOLVE_STEP,
    PERM_RETRY_STEP,
    Confirmation,
    ReadOnlyAdmin,
    admin_url,
    confirm_view,
    require,
)
from .forms import ReasonForm, ResolveStepForm, RetryStepForm

RETRYABLE = (StepStatus.ERROR, StepStatus.WAITING_FOR_RETRY, StepStatus.CANCELLED)


def _search_ids(term: str) -> int | None:
    digits = term.strip().removeprefix("#")
    return int(digits) if digits.isdigit() and len(digits) < 19 else None


class StepChangeList(ChangeList):
    """The step list joins nothing and leaves the JSON columns in the database."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        queryset = super().get_queryset(request, exclude_parameters)
        return queryset.select_related(None).defer("inputs", "results", "last_error")


@admin.register(WorkflowStep)
class WorkflowStepAdmin(ReadOnlyAdmin):
    tasker_template_lookup = "task__named_task_id"
    list_display = ("id", "name", "task_link", "status_badge", "attempts_display", "updated_at")
    list_display_links = ("id", "name")
    list_filter = ("status", ("updated_at", admin.DateFieldListFilter))
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    search_fields = ("name",)
    search_help_text = _("Step name, or a step or task id (12 or #12).")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "task_link",
                    "name",
                    "status_badge",
                    "waiting_reason",
                    "attempts_display",
                    "handler",
                    "retry_policy",
                    "worker_id",
                )
            },
        ),
        (
            _("Times"),
            {
                "fields": (
                    "enqueued_at",
                    "claimed_at",
                    "started_at",
                    "completed_at",
                    "next_attempt_at",
                    "lease_expires_at",
                    "updated_at",
                )
            },
        ),
        (_("Data"), {"fields": ("last_error_json", "results_json", "inputs_json")}),
    )
    readonly_fields = (
        "task_link",
        "name",
        "status_badge",
        "waiting_reason",
        "attempts_display",
        "handler",
        "retry_policy",
        "worker_id",
        "enqueued_at",
        "claimed_at",
        "started_at",
        "completed_at",
        "next_attempt_at",
        "lease_expires_at",
        "updated_at",
        "last_error_json",
        "results_json",
        "inputs_json",
    )

    class Media:
        css = {"all": ("tasker_django/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[WorkflowStep]:
        return (
            super()
            .get_queryset(request)
            .select_related("task__named_task__namespace", "named_step")
        )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return StepChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WorkflowStep], search_term: str
    ) -> tuple[QuerySet[WorkflowStep], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        number = _search_ids(term)
        match = Q(name__icontains=term)
        if number is not None:
            match |= Q(pk=number) | Q(task_id=number)
        return queryset.filter(match), False

    @admin.display(description=_("task"), ordering="task_id")
    def task_link(self, obj: WorkflowStep) -> SafeString:
        url = reverse("admin:tasker_django_task_change", args=[obj.task_id])
        return format_html('<a href="{}">Task {}</a>', url, obj.task_id)

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: WorkflowStep) -> SafeString:
        return display.badge(obj.status)

    @admin.display(description=_("attempts"))
    def attempts_display(self, obj: WorkflowStep) -> str:
        return f"{obj.attempts} / {obj.max_attempts}"

    @admin.display(description=_("handler"))
    def handler(self, obj: WorkflowStep) -> str:
        return obj.named_step.handler_class

    @admin.display(description=_("retry policy"))
    def retry_policy(self, obj: WorkflowStep) -> str:
        named = obj.named_step
        return retry_policy_text(named.retryable, named.max_attempts, named.backoff)

    @admin.display(description=_("waiting reason"))
    def waiting_reason(self, obj: WorkflowStep) -> str:
        task = obj.task
        now = clock.now()
        parents = list(
            WorkflowStep.objects.filter(child_edges__to_step=obj).only("pk", "name", "status")
        )
        reason = step_reason(task, obj, parents, now)
        past_deadline = (
            task.deadline_at is not None
            and task.deadline_at <= now
            and task.status in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)
            and obj.status not in (*DONE_STEP_STATUSES, StepStatus.ERROR)
        )
        if past_deadline:
            reason = "task past its deadline; " + reason
        return display.shown_text(reason) or "—"

    @admin.display(description=_("last error"))
    def last_error_json(self, obj: WorkflowStep) -> SafeString:
        return display.json_block(obj.last_error)

    @admin.display(description=_("results"))
    def results_json(self, obj: WorkflowStep) -> SafeString:
        return display.json_block(obj.results)

    @admin.display(description=_("inputs"))
    def inputs_json(self, obj: WorkflowStep) -> SafeString:
        return display.json_block(obj.inputs)

    # -- the step page --------------------------------------------------------

    def page_context(self, request: HttpRequest, obj: WorkflowStep) -> dict[str, Any]:
        attempts = list(StepAttempt.objects.filter(step=obj).order_by("attempt_number"))
        # By task first: the event log's index (a step's events have no index of their own).
        events = list(
            TaskEvent.objects.filter(task_id=obj.task_id, step=obj).order_by("-created_at", "-id")[
                :100
            ]
        )
        user = request.user
        open_task = obj.task.status != TaskStatus.CANCELLED
        return {
            "tasker_attempts": [
                {
                    "number": a.attempt_number,
                    "outcome": display.badge(a.outcome),
                    "started_at": a.started_at,
                    "finished_at": a.finished_at,
                    "duration": display.format_duration(
                        a.duration_ms / 1000 if a.duration_ms is not None else None
                    ),
                    "error_class": a.error_class,
                    "error_message": display.shown_text(a.error_message),
                    "error_code": a.error_code,
                    "error_category": a.error_category,
                    "error_context": display.pretty_json(a.error_context)
                    if a.error_context
                    else "",
                    "retry_after": a.retry_after,
                    "worker": a.worker,
                }
                for a in attempts
            ],
            "tasker_events": events,
            "tasker_task_url": admin_url(obj.task),
            "tasker_can_retry": user.has_perm(PERM_RETRY_STEP)
            and open_task
            and (obj.status in RETRYABLE or obj.status in DONE_STEP_STATUSES),
            "tasker_can_resolve": user.has_perm(PERM_RESOLVE_STEP)
            and open_task
            and obj.status not in DONE_STEP_STATUSES,
            "tasker_can_cancel_step": user.has_perm(PERM_CANCEL_STEP)
            and obj.status not in (*DONE_STEP_STATUSES, StepStatus.CANCELLED),
            "tasker_retry_url": reverse("admin:tasker_django_workflowstep_retry", args=[obj.pk]),
            "tasker_resolve_url": reverse(
                "admin:tasker_django_workflowstep_resolve", args=[obj.pk]
            ),
            "tasker_cancel_step_url": reverse(
                "admin:tasker_django_workflowstep_cancel", args=[obj.pk]
            ),
        }

    # -- actions --------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        custom = [
            path(
                "<int:step_id>/retry/",
                wrap(self.retry_view),
                name="tasker_django_workflowstep_retry",
            ),
            path(
                "<int:step_id>/resolve/",
                wrap(self.resolve_view),
                name="tasker_django_workflowstep_resolve",
            ),
            path(
                "<int:step_id>/cancel/",
                wrap(self.cancel_view),
                name="tasker_django_workflowstep_cancel",
            ),
        ]
        return custom + super().get_urls()

    def _step(self, request: HttpRequest, step_id: int, permission: str) -> WorkflowStep:
        require(request, permission)
        step = get_object_or_404(
            WorkflowStep.objects.select_related("task__named_task__namespace"), pk=step_id
        )
        if not self.has_view_permission(request, step):
            raise PermissionDenied
        return step

    @staticmethod
    def _describe(step: WorkflowStep) -> str:
        nt = step.task.named_task
        return (
            f"step {step.name!r} of task {step.task_id} "
            f"({nt.namespace.name}/{nt.name}@{nt.version})"
        )

    def retry_view(self, request: HttpRequest, step_id: int) -> HttpResponse:
        step = self._step(request, step_id, PERM_RETRY_STEP)
        downstream = request.GET.get("downstream") == "1"

        def perform(data: dict[str, Any]) -> str:
            done = operations.retry_step(
                step.pk,
                actor=request.user,
                reason=data["reason"],
                reset_downstream=data["reset_downstream"],
            )
            extra = " with its downstream steps reset" if data["reset_downstream"] else ""
            return f"Retried {self._describe(step)}{extra}: now {done.status}."

        finished = step.status in DONE_STEP_STATUSES
        return confirm_view(
            self,
            request,
            Confirmation(
                title=f"Retry step {step.name}?",
                question=(
                    f"Retry {self._describe(step)}, now {display.status_label(step.status)} "
                    f"after {step.attempts} attempt(s)? It gets a fresh attempt budget and is "
                    "enqueued again."
                    + (
                        " It already finished: tick the box to run it and its downstream "
                        "steps again."
                        if finished
                        else ""
                    )
                ),
                submit_label="Yes, retry",
                form_class=RetryStepForm,
                form_initial={"reset_downstream": downstream or finished},
                perform=perform,
                done_url=admin_url(step.task),
                cancel_url=admin_url(step),
            ),
        )

    def resolve_view(self, request: HttpRequest, step_id: int) -> HttpResponse:
        step = self._step(request, step_id, PERM_RESOLVE_STEP)

        def perform(data: dict[str, Any]) -> str:
            operations.resolve_step(
                step.pk, results=data["results"], actor=request.user, reason=data["reason"]
            )
            return f"Resolved {self._describe(step)} manually."

        return confirm_view(
            self,
            request,
            Confirmation(
                title=f"Resolve step {step.name} manually?",
                question=(
                    f"Mark {self._describe(step)} (now {display.status_label(step.status)}) as "
                    "resolved manually. Steps that depend on it will run."
                ),
                submit_label="Yes, resolve it",
                form_class=ResolveStepForm,
                # Masked results must not be submitted back: prefill only plain ones.
                form_initial={
                    "results": display.pretty_json(step.results)
                    if step.results and display.current_viewer().plain
                    else ""
                },
                perform=perform,
                done_url=admin_url(step.task),
                cancel_url=admin_url(step),
            ),
        )

    def cancel_view(self, request: HttpRequest, step_id: int) -> HttpResponse:
        step = self._step(request, step_id, PERM_CANCEL_STEP)

        def perform(data: dict[str, Any]) -> str:
            operations.cancel_step(step.pk, actor=request.user, reason=data["reason"])
            return f"Cancelled {self._describe(step)}."

        return confirm_view(
            self,
            request,
            Confirmation(
                title=f"Cancel step {step.name}?",
                question=(
                    f"Cancel {self._describe(step)} (now {display.status_label(step.status)})? "
                    "A running handler's result will be discarded, and steps that depend on "
                    "it will not run."
                ),
                submit_label="Yes, cancel the step",
                form_class=ReasonForm,
                perform=perform,
                done_url=admin_url(step.task),
                cancel_url=admin_url(step),
                danger=True,
            ),
        )


def retry_policy_text(
    retryable: bool, max_attempts: int | None, backoff: dict[str, Any] | None
) -> str:
    if not retryable:
        return "not retryable (one attempt)"
    if max_attempts:
        attempts = f"{max_attempts} attempt{'s' if max_attempts != 1 else ''}"
    else:
        attempts = "default attempts"
    if not backoff:
        return f"{attempts}, default backoff"
    return (
        f"{attempts}, {backoff.get('strategy', 'exponential')} backoff from "
        f"{backoff.get('initial_delay')} s (×{backoff.get('multiplier')}, "
        f"max {backoff.get('max_delay')} s{', jitter' if backoff.get('jitter') else ''})"
    )


@admin.register(StepAttempt)
class StepAttemptAdmin(ReadOnlyAdmin):
    tasker_template_lookup = "task__named_task_id"
    list_display = (
        "finished_at",
        "task_link",
        "step_link",
        "attempt_number",
        "outcome_badge",
        "duration",
        "error_class",
        "message",
    )
    list_display_links = ("finished_at",)
    list_filter = ("outcome", ("finished_at", admin.DateFieldListFilter))
    list_select_related = ("step",)
    list_per_page = 50
    # The page shows the message and context masked for the viewer (security).
    exclude = ("error_message", "error_context")
    readonly_fields = ("masked_error_message", "masked_error_context")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    search_fields = ("error_class", "error_code", "error_message")
    search_help_text = _("Error class, code or message text.")

    class Media:
        css = {"all": ("tasker_django/admin.css",)}

    @admin.display(description=_("task"), ordering="task_id")
    def task_link(self, obj: StepAttempt) -> SafeString:
        url = reverse("admin:tasker_django_task_change", args=[obj.task_id])
        return format_html('<a href="{}">Task {}</a>', url, obj.task_id)

    @admin.display(description=_("step"))
    def step_link(self, obj: StepAttempt) -> SafeString:
        return format_html('<a href="{}">{}</a>', admin_url(obj.step), obj.step.name)

    @admin.display(description=_("outcome"), ordering="outcome")
    def outcome_badge(self, obj: StepAttempt) -> SafeString:
        return display.badge(obj.outcome)

    @admin.display(description=_("duration"), ordering="duration_ms")
    def duration(self, obj: StepAttempt) -> str:
        ms = obj.duration_ms
        return display.format_duration(ms / 1000 if ms is not None else None)

    @admin.display(description=_("error message"))
    def masked_error_message(self, obj: StepAttempt) -> str:
        return str(display.shown_text(obj.error_message))

    @admin.display(description=_("error context"))
    def masked_error_context(self, obj: StepAttempt) -> SafeString:
        return display.json_block(obj.error_context)

    @admin.display(description=_("message"))
    def message(self, obj: StepAttempt) -> str:
        return display.truncate(obj.error_message, 120)


@admin.register(TaskEvent)
class TaskEventAdmin(ReadOnlyAdmin):
    tasker_template_lookup = "task__named_task_id"
    list_display = ("created_at", "task_link", "step_name", "kind", "name", "change", "actor")
    list_display_links = ("created_at",)
    list_filter = ("kind", ("created_at", admin.DateFieldListFilter))
    list_per_page = 100
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    search_fields = ("name", "actor")
    search_help_text = _("Event name or actor.")
    fields = (
        "created_at",
        "task_link",
        "step_name",
        "kind",
        "name",
        "change",
        "actor",
        "reason",
        "payload_json",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ("tasker_django/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskEvent]:
        return super().get_queryset(request).order_by("-created_at", "-id")

    @admin.display(description=_("task"), ordering="task_id")
    def task_link(self, obj: TaskEvent) -> SafeString:
        url = reverse("admin:tasker_django_task_change", args=[obj.task_id])
        return format_html('<a href="{}">Task {}</a>', url, obj.task_id)

    @admin.display(description=_("step"))
    def step_name(self, obj: TaskEvent) -> str:
        return str((obj.payload or {}).get("step_name") or "")

    @admin.display(description=_("change"))
    def change(self, obj: TaskEvent) -> str:
        if obj.from_status or obj.to_status:
            return f"{obj.from_status or '?'} → {obj.to_status or '?'}"
        return ""

    @admin.display(description=_("payload"))
    def payload_json(self, obj: TaskEvent) -> SafeString:
        return display.json_block(obj.payload)
