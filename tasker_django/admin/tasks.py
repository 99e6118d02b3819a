"""The task list, the task page (live DAG, steps, timeline), the dashboard and task actions."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import TruncMinute
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..definitions.graph import dependency_levels
from ..exceptions import InvalidTransition
from ..graphs import GraphNode, render_svg
from ..models import (
    FINAL_TASK_STATUSES,
    AttemptOutcome,
    NamedTask,
    Namespace,
    StepAttempt,
    StepStatus,
    Task,
    TaskEvent,
    TaskStatus,
    WorkflowStep,
)
from ..services import operations
from ..services.inspect import step_states
from . import display
from .base import (
    PERM_CANCEL_TASK,
    PERM_RETRY_STEP,
    Confirmation,
    ReadOnlyAdmin,
    admin_url,
    confirm_view,
    id_or,
    require,
    search_terms,
    url_pattern,
)
from .charts import render_bar_chart
from .forms import ReasonForm

#: Events shown on the task page (newest first); the rest are one link away.
EVENT_LIMIT = 200
#: At most this many tasks are handled by one bulk action (the message says so).
BULK_LIMIT = 1000
FAILED_OUTCOMES = [o.value for o in AttemptOutcome if o != AttemptOutcome.SUCCESS]


def _failed_attempts() -> QuerySet[StepAttempt]:
    return StepAttempt.objects.filter(task=OuterRef("pk"), outcome__in=FAILED_OUTCOMES).order_by(
        "-finished_at", "-id"
    )


# ---------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------


class NamespaceFilter(admin.SimpleListFilter):
    title = _("namespace")
    parameter_name = "namespace"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = Namespace.objects.order_by("name").values_list("name", flat=True)
        return [(name, name) for name in names]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(named_task__namespace__name=value) if value else queryset


class TemplateFilter(admin.SimpleListFilter):
    title = _("template")
    parameter_name = "template"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        pairs = (
            NamedTask.objects.order_by("namespace__name", "name")
            .values_list("namespace__name", "name")
            .distinct()
        )
        return [(f"{ns}/{name}", f"{ns}/{name}") for ns, name in pairs]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value or "/" not in value:
            return queryset
        namespace, name = value.split("/", 1)
        return queryset.filter(named_task__namespace__name=namespace, named_task__name=name)


class VersionFilter(admin.SimpleListFilter):
    title = _("version")
    parameter_name = "version"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        templates = NamedTask.objects.all()
        chosen = request.GET.get(TemplateFilter.parameter_name, "")
        if "/" in chosen:
            namespace, name = chosen.split("/", 1)
            templates = templates.filter(namespace__name=namespace, name=name)
        versions = templates.order_by("version").values_list("version", flat=True).distinct()
        return [(v, v) for v in versions]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(named_task__version=value) if value else queryset


# ---------------------------------------------------------------------------
# Task admin
# ---------------------------------------------------------------------------


@admin.register(Task)
class TaskAdmin(ReadOnlyAdmin):
    tasker_template_lookup = "named_task_id"
    list_display = (
        "id",
        "template",
        "status_badge",
        "progress",
        "started",
        "failed",
        "latest_error",
    )
    list_filter = (
        "status",
        NamespaceFilter,
        TemplateFilter,
        VersionFilter,
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = ("named_task__namespace",)
    list_per_page = 50
    # Counting 100,000 rows twice per page is wasted work; facets would count per choice.
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    search_fields = ("initiator",)  # the real search is get_search_results
    search_help_text = _(
        "Task id (12 or #12), or text found in the tags, the initiator, the idempotency key "
        "or the context (keys and values, matched in the stored JSON). Several words: all must "
        "match."
    )
    actions = ("bulk_retry", "bulk_cancel")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "template_link",
                    "failed_steps",
                    "priority",
                    "initiator",
                    "source_system",
                    "reason",
                    "idempotency_key",
                    "tags_json",
                )
            },
        ),
        (
            _("Times"),
            {
                "classes": ("collapse",),
                "fields": (
                    "created_at",
                    "started_at",
                    "completed_at",
                    "duration",
                    "deadline_at",
                    "updated_at",
                ),
            },
        ),
        (_("Context"), {"fields": ("context_json",)}),
    )
    readonly_fields = (
        "template_link",
        "failed_steps",
        "priority",
        "initiator",
        "source_system",
        "reason",
        "idempotency_key",
        "tags_json",
        "created_at",
        "started_at",
        "completed_at",
        "duration",
        "deadline_at",
        "updated_at",
        "context_json",
    )

    class Media:
        css = {"all": ("tasker_django/admin.css",)}

    # -- queryset and search ------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Task]:
        failed = _failed_attempts()
        return (
            super()
            .get_queryset(request)
            .annotate(
                latest_error_class=Subquery(failed.values("error_class")[:1]),
                latest_error_message=Subquery(failed.values("error_message")[:1]),
            )
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Task], search_term: str
    ) -> tuple[QuerySet[Task], bool]:
        for term, number in search_terms(search_term):
            match = (
                Q(initiator__icontains=term)
                | Q(idempotency_key=term)
                | Q(tags__icontains=term)
                | Q(context__icontains=term)
            )
            queryset = queryset.filter(id_or(match, "pk", number))
        return queryset, False

    # -- columns and fields ---------------------------------------------------

    @admin.display(description=_("template"), ordering="named_task__name")
    def template(self, obj: Task) -> str:
        nt = obj.named_task
        return f"{nt.namespace.name}/{nt.name}@{nt.version}"

    @admin.display(description=_("template"))
    def template_link(self, obj: Task) -> SafeString:
        return format_html('<a href="{}">{}</a>', admin_url(obj.named_task), self.template(obj))

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Task) -> SafeString:
        return display.badge(obj.status)

    @admin.display(description=_("progress"))
    def progress(self, obj: Task) -> SafeString:
        return display.progress_bar(obj.completed_steps, obj.total_steps)

    @admin.display(description=_("started · duration"), ordering="started_at")
    def started(self, obj: Task) -> SafeString:
        return format_html(
            '<span title="{}">{}</span><div class="tasker-small tasker-muted">{}</div>',
            display.short_time(obj.started_at),
            display.short_time(obj.started_at, "%b %d %H:%M:%S"),
            self.duration(obj) if obj.started_at else "",
        )

    @admin.display(description=_("duration"))
    def duration(self, obj: Task) -> str:
        end = obj.completed_at
        if end is None and obj.status in FINAL_TASK_STATUSES:
            end = obj.updated_at
        return display.duration_between(obj.started_at, end, timezone.now())

    @admin.display(description=_("failed"), ordering="failed_steps")
    def failed(self, obj: Task) -> SafeString | int:
        if obj.failed_steps:
            return format_html('<span class="tasker-failed-count">{}</span>', obj.failed_steps)
        return 0

    @admin.display(description=_("latest error"))
    def latest_error(self, obj: Task) -> SafeString | str:
        cls = getattr(obj, "latest_error_class", None) or ""
        message = getattr(obj, "latest_error_message", None) or ""
        if not (cls or message):
            return ""
        text = f"{cls.rsplit('.', 1)[-1]}: {message}" if cls else message
        current = obj.status == TaskStatus.ERROR
        return format_html(
            '<span class="tasker-error{}" title="{}">{}</span>',
            "" if current else " tasker-error-past",
            display.truncate(f"{cls}: {message}", 1000),
            display.truncate(text, 90),
        )

    @admin.display(description=_("tags"))
    def tags_json(self, obj: Task) -> SafeString:
        return display.json_block(obj.tags)

    @admin.display(description=_("context"))
    def context_json(self, obj: Task) -> SafeString:
        return display.json_block(obj.context, empty="{}")

    # -- the task page --------------------------------------------------------

    def page_context(self, request: HttpRequest, obj: Task) -> dict[str, Any]:
        task = obj
        """Everything below the fields, in a fixed number of queries (5) for any task size."""
        now = timezone.now()
        states = step_states(task, now=now)  # 2 queries
        extra: dict[int, dict[str, Any]] = {
            row["pk"]: dict(row)
            for row in WorkflowStep.objects.filter(task=task).values(  # 1 query
                "pk",
                "results",
                "started_at",
                "completed_at",
                "updated_at",
                "named_step__handler_class",
            )
        }
        step_url = url_pattern("admin:tasker_django_workflowstep_change")
        retry_url = url_pattern("admin:tasker_django_workflowstep_retry")
        nodes: list[GraphNode] = []
        edges: list[tuple[str, str]] = []
        rows: list[dict[str, Any]] = []
        names: dict[int, str] = {}
        for state in states:
            info = extra.get(state.id, {})
            url = step_url(state.id)
            names[state.id] = state.name
            error = display.error_text(state.last_error)
            nodes.append(
                GraphNode(
                    name=state.name,
                    status=state.status,
                    url=url,
                    detail=f"{display.status_label(state.status)} · "
                    f"{state.attempts}/{state.max_attempts} attempts",
                )
            )
            edges.extend((parent, state.name) for parent in state.parents)
            rows.append(
                {
                    "id": state.id,
                    "name": state.name,
                    "url": url,
                    "status": state.status,
                    "badge": display.badge(state.status),
                    "attempts": state.attempts,
                    "max_attempts": state.max_attempts,
                    "duration": step_duration(state.status, info, now),
                    "handler": info.get("named_step__handler_class", ""),
                    "error": error,
                    "error_short": display.truncate(error, 160),
                    "reason": display.shown_text(state.reason),
                    "parents": ", ".join(state.parents),
                    "results": display.pretty_json(info["results"])
                    if info.get("results") is not None
                    else "",
                    "retry_url": retry_url(state.id)
                    if state.status
                    in (StepStatus.ERROR, StepStatus.WAITING_FOR_RETRY, StepStatus.CANCELLED)
                    else "",
                }
            )
        try:
            levels = dependency_levels([n.name for n in nodes], edges)
            svg = render_svg(nodes, edges, levels, title=f"Steps of task {task.pk}")
        except ValueError:  # a corrupt graph must not take the page down
            svg = ""
        event_qs = TaskEvent.objects.filter(task=task)
        events = list(event_qs.order_by("-created_at", "-id")[:EVENT_LIMIT])  # 1 query
        event_total = len(events)
        if event_total == EVENT_LIMIT:
            event_total = event_qs.count()  # 1 query, only for long timelines
        timeline = [
            {
                "at": e.created_at,
                "name": e.name,
                "kind": e.kind,
                "step": names.get(e.step_id or 0, ""),
                "step_url": step_url(e.step_id) if e.step_id else "",
                "from_status": e.from_status,
                "to_status": e.to_status,
                "actor": e.actor,
                "reason": display.shown_text(e.reason),
                "payload": display.pretty_json(e.payload) if e.payload else "",
            }
            for e in events
        ]
        can_retry = request.user.has_perm(PERM_RETRY_STEP)
        can_cancel = request.user.has_perm(PERM_CANCEL_TASK)
        counts = Counter(state.status for state in states)
        return {
            "tasker_summary": {
                "progress": display.progress_bar(task.completed_steps, task.total_steps),
                "template": self.template(task),
                "template_url": admin_url(task.named_task),
                "started": display.short_time(task.started_at),
                "duration": self.duration(task),
                "failed": task.failed_steps,
            },
            "tasker_svg": svg,
            "tasker_steps": rows,
            "tasker_status_counts": [
                (display.badge(status), counts[status]) for status in StepStatus if counts[status]
            ],
            "tasker_events": timeline,
            "tasker_event_total": event_total,
            "tasker_events_url": reverse("admin:tasker_django_taskevent_changelist")
            + f"?task__id__exact={task.pk}",
            "tasker_can_retry": can_retry and counts[StepStatus.ERROR] > 0,
            "tasker_can_cancel": can_cancel and task.status not in FINAL_TASK_STATUSES,
            "tasker_can_retry_steps": can_retry and task.status != TaskStatus.CANCELLED,
            "tasker_retry_failed_url": reverse(
                "admin:tasker_django_task_retry_failed", args=[task.pk]
            ),
            "tasker_cancel_url": reverse("admin:tasker_django_task_cancel", args=[task.pk]),
            "tasker_dashboard_url": reverse("admin:tasker_django_dashboard"),
        }

    # -- custom URLs ----------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        custom = [
            path("dashboard/", wrap(self.dashboard_view), name="tasker_django_dashboard"),
            path(
                "<int:task_id>/retry-failed/",
                wrap(self.retry_failed_view),
                name="tasker_django_task_retry_failed",
            ),
            path("<int:task_id>/cancel/", wrap(self.cancel_view), name="tasker_django_task_cancel"),
        ]
        return custom + super().get_urls()

    def _task_for_action(self, request: HttpRequest, task_id: int, permission: str) -> Task:
        require(request, permission)
        task = get_object_or_404(Task.objects.select_related("named_task__namespace"), pk=task_id)
        if not self.has_view_permission(request, task):
            raise PermissionDenied
        return task

    def retry_failed_view(self, request: HttpRequest, task_id: int) -> HttpResponse:
        task = self._task_for_action(request, task_id, PERM_RETRY_STEP)
        failed = list(
            WorkflowStep.objects.filter(task=task, status=StepStatus.ERROR).order_by("position")
        )
        step_url = url_pattern("admin:tasker_django_workflowstep_change")

        def perform(data: dict[str, Any]) -> str:
            ids = operations.retry_failed_steps(task.pk, actor=request.user, reason=data["reason"])
            return f"Task {task.pk}: {len(ids)} failed step(s) enqueued again."

        return confirm_view(
            self,
            request,
            Confirmation(
                title=f"Retry the failed steps of task {task.pk}?",
                question=(
                    f"These failed steps of task {task.pk} ({self.template(task)}) will get a "
                    "fresh attempt budget and be enqueued again:"
                    if failed
                    else f"Task {task.pk} has no failed steps."
                ),
                submit_label="Yes, retry them",
                form_class=ReasonForm,
                perform=perform,
                done_url=admin_url(task),
                cancel_url=admin_url(task),
                objects=[(f"{s.name} ({s.status})", step_url(s.pk)) for s in failed],
            ),
        )

    def cancel_view(self, request: HttpRequest, task_id: int) -> HttpResponse:
        task = self._task_for_action(request, task_id, PERM_CANCEL_TASK)

        def perform(data: dict[str, Any]) -> str:
            operations.cancel_task(task.pk, actor=request.user, reason=data["reason"])
            return f"Task {task.pk} cancelled."

        return confirm_view(
            self,
            request,
            Confirmation(
                title=f"Cancel task {task.pk}?",
                question=(
                    f"Task {task.pk} ({self.template(task)}, {display.status_label(task.status)}) "
                    "will be cancelled: its unfinished steps are cancelled and results of "
                    "handlers still running are discarded. This cannot be undone."
                ),
                submit_label="Yes, cancel the task",
                form_class=ReasonForm,
                perform=perform,
                done_url=admin_url(task),
                cancel_url=admin_url(task),
                danger=True,
            ),
        )

    # -- bulk actions ---------------------------------------------------------

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(PERM_RETRY_STEP)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(PERM_CANCEL_TASK)

    @admin.action(
        description=_("Retry the failed steps of the selected tasks"), permissions=["retry"]
    )
    def bulk_retry(self, request: HttpRequest, queryset: QuerySet[Task]) -> HttpResponse | None:
        return self._bulk(
            request,
            queryset,
            action="bulk_retry",
            eligible=queryset.filter(status=TaskStatus.ERROR),
            verb="retry the failed steps of",
            run=lambda pk, reason: operations.retry_failed_steps(
                pk, actor=request.user, reason=reason
            ),
        )

    @admin.action(description=_("Cancel the selected tasks"), permissions=["cancel"])
    def bulk_cancel(self, request: HttpRequest, queryset: QuerySet[Task]) -> HttpResponse | None:
        return self._bulk(
            request,
            queryset,
            action="bulk_cancel",
            eligible=queryset.exclude(status__in=FINAL_TASK_STATUSES),
            verb="cancel",
            run=lambda pk, reason: operations.cancel_task(pk, actor=request.user, reason=reason),
        )

    def _bulk(
        self,
        request: HttpRequest,
        queryset: QuerySet[Task],
        *,
        action: str,
        eligible: QuerySet[Task],
        verb: str,
        run: Any,
    ) -> HttpResponse | None:
        form = ReasonForm(request.POST if request.POST.get("tasker_confirm") == "yes" else None)
        ids = list(eligible.order_by("pk").values_list("pk", flat=True)[: BULK_LIMIT + 1])
        if form.is_bound and form.is_valid():
            done: list[int] = []
            refused: list[str] = []
            for pk in ids[:BULK_LIMIT]:
                try:
                    run(pk, form.cleaned_data["reason"])
                except InvalidTransition as exc:
                    refused.append(str(exc))
                else:
                    done.append(pk)
            selected = queryset.count()
            if done:
                messages.success(
                    request,
                    f"Did {verb} {len(done)} task(s): "
                    + ", ".join(f"#{pk}" for pk in done[:30])
                    + (" …" if len(done) > 30 else ""),
                )
            skipped = selected - len(done) - len(refused)
            if skipped > 0:
                messages.warning(request, f"{skipped} selected task(s) skipped: nothing to {verb}.")
            if refused:
                messages.error(request, f"{len(refused)} refused: " + "; ".join(refused[:5]))
            if len(ids) > BULK_LIMIT:
                messages.warning(
                    request,
                    f"Only the first {BULK_LIMIT} eligible tasks were handled; run the action "
                    "again for the rest.",
                )
            return None
        selected_count = queryset.count()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Are you sure?"),
            "verb": verb,
            "action": action,
            "form": form,
            "selected_count": selected_count,
            "eligible_count": len(ids) if len(ids) <= BULK_LIMIT else f"more than {BULK_LIMIT}",
            "eligible": list(eligible.select_related("named_task__namespace").order_by("pk")[:20]),
            "selected_pks": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "limit": BULK_LIMIT,
        }
        return TemplateResponse(request, "admin/tasker_django/bulk_confirm.html", context)

    # -- dashboard ------------------------------------------------------------

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Tasker dashboard"),
            **dashboard_context(timezone.now()),
        }
        return TemplateResponse(request, "admin/tasker_django/dashboard.html", context)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {"tasker_dashboard_url": reverse("admin:tasker_django_dashboard")}
        return super().changelist_view(request, {**extra, **(extra_context or {})})


def step_duration(status: str, info: dict[str, Any], now: Any) -> str:
    """Wall time from the first start; a step that stopped without completing (error,
    cancelled) stopped at its last update."""
    if status in (StepStatus.PENDING, StepStatus.ENQUEUED) and not info.get("started_at"):
        return "—"
    end = info.get("completed_at")
    if end is None and status in (StepStatus.ERROR, StepStatus.CANCELLED):
        end = info.get("updated_at")
    return display.duration_between(info.get("started_at"), end, now)


def dashboard_context(now: Any) -> dict[str, Any]:
    """Tasks and steps by status, last hour's failures and throughput: 6 queries."""
    since = now - timedelta(hours=1)
    task_counts = dict(
        Task.objects.order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    step_counts = dict(
        WorkflowStep.objects.order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    recent = StepAttempt.objects.filter(finished_at__gte=since)
    failures = recent.filter(outcome__in=FAILED_OUTCOMES)
    by_error = [
        {**row, "outcome_badge": display.badge(row["outcome"])}
        for row in failures.order_by()
        .values("error_class", "error_code", "outcome")
        .annotate(n=Count("id"), tasks=Count("task_id", distinct=True))
        .order_by("-n")
    ]
    latest = list(failures.select_related("step").order_by("-finished_at", "-id")[:25])
    per_minute = dict(
        recent.filter(outcome=AttemptOutcome.SUCCESS)
        .order_by()
        .annotate(minute=TruncMinute("finished_at"))
        .values_list("minute")
        .annotate(n=Count("id"))
        .values_list("minute", "n")
    )
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=59)
    buckets = [start + timedelta(minutes=i) for i in range(60)]
    series = [(b.strftime("%H:%M"), int(per_minute.get(b, 0))) for b in buckets]
    completed = sum(n for _, n in series)
    step_url = url_pattern("admin:tasker_django_workflowstep_change")
    task_url = url_pattern("admin:tasker_django_task_change")
    return {
        "task_counts": [(display.badge(s), task_counts.get(s, 0), s) for s in TaskStatus],
        "task_total": sum(task_counts.values()),
        "step_counts": [(display.badge(s), step_counts.get(s, 0), s) for s in StepStatus],
        "step_total": sum(step_counts.values()),
        "failures_by_error": by_error[:20],
        "failure_total": sum(row["n"] for row in by_error),
        "latest_failures": [
            {
                "at": a.finished_at,
                "task_id": a.task_id,
                "task_url": task_url(a.task_id),
                "step": a.step.name,
                "step_url": step_url(a.step_id),
                "attempt": a.attempt_number,
                "outcome": display.badge(a.outcome),
                "error_class": a.error_class,
                "message": display.truncate(a.error_message, 200),
            }
            for a in latest
        ],
        "throughput_svg": render_bar_chart(
            series, title="Steps completed per minute", bar_width=13
        ),
        "throughput_total": completed,
        "throughput_rate": f"{completed / 60:.1f}",
        "task_changelist": reverse("admin:tasker_django_task_changelist"),
        "step_changelist": reverse("admin:tasker_django_workflowstep_changelist"),
    }
