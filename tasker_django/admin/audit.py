"""The audit log in the admin: read-only, filterable by event and namespace, searchable
by task id and actor. Viewing it needs ``tasker_django.view_auditrecord``."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import AuditRecord
from ..security.access import for_request
from ..security.audit import template_of
from ..security.masking import for_user
from . import display
from .base import ReadOnlyAdmin, id_or, search_terms


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "event",
        "kind",
        "template_label",
        "task_link",
        "step_name",
        "actor",
        "reason_short",
        "expires_at",
    )
    list_display_links = ("created_at",)
    list_filter = ("event", "namespace", "kind", ("created_at", admin.DateFieldListFilter))
    list_per_page = 100
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    search_fields = ("actor",)  # the real search is get_search_results
    search_help_text = _("Task id (12 or #12) or actor. Several words: all must match.")
    fields = (
        "created_at",
        "event",
        "kind",
        "template_label",
        "task_link",
        "step_id",
        "step_name",
        "change",
        "actor",
        "reason",
        "payload_json",
        "expires_at",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ("tasker_django/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[AuditRecord]:
        # security.access_control: not the records of templates the user may not see.
        queryset = super().get_queryset(request).order_by("-created_at", "-id")
        return for_request(request).exclude_hidden_audit(queryset)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuditRecord], search_term: str
    ) -> tuple[QuerySet[AuditRecord], bool]:
        for term, number in search_terms(search_term):
            queryset = queryset.filter(id_or(Q(actor__icontains=term), "task_id", number))
        return queryset, False

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            obj._tasker_viewer = request.user  # masks the payload for this user
        return obj

    @admin.display(description=_("template"), ordering="template")
    def template_label(self, obj: AuditRecord) -> str:
        return f"{obj.namespace}/{obj.template}@{obj.version}" if obj.template else ""

    @admin.display(description=_("task"), ordering="task_id")
    def task_link(self, obj: AuditRecord) -> SafeString | str:
        if obj.task_id is None:
            return ""
        url = reverse("admin:tasker_django_task_change", args=[obj.task_id])
        return format_html('<a href="{}">Task {}</a>', url, obj.task_id)

    @admin.display(description=_("change"))
    def change(self, obj: AuditRecord) -> str:
        if obj.from_status or obj.to_status:
            return f"{obj.from_status or '?'} → {obj.to_status or '?'}"
        return ""

    @admin.display(description=_("reason"))
    def reason_short(self, obj: AuditRecord) -> str:
        return display.truncate(obj.reason or "", 80)

    @admin.display(description=_("payload"))
    def payload_json(self, obj: AuditRecord) -> SafeString:
        """Stored masked unless the template's ``include_sensitive_data`` is true; then
        masked here too for users without ``tasker_django.view_sensitive_data``."""
        template = template_of(obj)
        viewer = getattr(obj, "_tasker_viewer", None)
        return display.json_block(for_user(obj.payload, viewer, template))
