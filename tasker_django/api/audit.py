"""``audit/``: the audit log, read-only (``security.audit_logging`` and the ``audit_log`` sink).

Listing needs ``tasker_django.view_auditrecord``; filters ``task_id``, ``event``,
``namespace``, ``kind``, ``actor``, ``created_after``/``created_before``. Payloads are
masked for users without ``tasker_django.view_sensitive_data`` (records of templates
with ``include_sensitive_data: false`` are stored masked anyway). The namespace hook
(``TASKER["API_NAMESPACE_ACCESS"]``) hides records of namespaces the user may not view.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers

from ..models import AuditRecord
from ..security.access import for_request
from ..security.audit import template_of
from ..security.masking import can_view_sensitive, mask, sensitive_names
from .base import TaskerViewMixin
from .filters import IdFilter, UTCDateTimeFilter
from .lookups import fake
from .permissions import visible_namespaces


class AuditRecordFilter(django_filters.FilterSet):
    task_id = IdFilter(field_name="task_id", help_text="Task id.")
    event = django_filters.CharFilter(help_text="Event name, e.g. step.failed.")
    namespace = django_filters.CharFilter(help_text="Namespace name.")
    kind = django_filters.CharFilter(help_text="transition, action or event.")
    actor = django_filters.CharFilter(help_text="Who did it (operator actions).")
    created_after = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditRecord
        fields: list[str] = []


class AuditRecordSerializer(serializers.ModelSerializer[AuditRecord]):
    payload = serializers.SerializerMethodField()

    class Meta:
        model = AuditRecord
        fields = [
            "id",
            "created_at",
            "event",
            "kind",
            "namespace",
            "template",
            "version",
            "task_id",
            "step_id",
            "step_name",
            "from_status",
            "to_status",
            "actor",
            "reason",
            "payload",
            "expires_at",
        ]
        read_only_fields = fields

    def get_payload(self, obj: AuditRecord) -> dict[str, Any]:
        request = self.context.get("request")
        user = getattr(request, "user", None)
        if can_view_sensitive(user):
            return dict(obj.payload or {})
        names: dict[tuple[str, str, str], Any] | None = self.context.get("_sensitive")
        if names is None:  # one lookup per template per response
            names = {}
            self.context["_sensitive"] = names  # type: ignore[index]
        key = (obj.namespace, obj.template, obj.version)
        if key not in names:
            names[key] = sensitive_names(template_of(obj))
        return dict(mask(obj.payload or {}, names[key]))


@extend_schema(summary="The audit log (newest first)")
class AuditRecordListView(TaskerViewMixin, generics.ListAPIView[AuditRecord]):
    serializer_class = AuditRecordSerializer
    filterset_class = AuditRecordFilter
    ordering_fields = ["created_at", "id"]
    ordering = ["-created_at", "-id"]
    required_permissions = {"*": ("view_auditrecord",)}

    def get_queryset(self) -> QuerySet[AuditRecord]:
        if fake(self):
            return AuditRecord.objects.none()
        # security.access_control: not the records of templates the user may not see.
        qs = for_request(self.request).exclude_hidden_audit(AuditRecord.objects.all())
        names = visible_namespaces(self.request)
        return qs if names is None else qs.filter(namespace__in=names)
