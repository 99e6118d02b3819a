"""Alerts of the templates' ``monitoring.alerts``: a read-only list and page.

Rows are written only by ``tasker_evaluate_alerts`` (and its schedule); the admin
shows them with a severity badge and status, filters and search. Needs
``tasker_django.view_alert``.
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from ..models import Alert
from . import display
from .base import ReadOnlyAdmin


def severity_badge(severity: str) -> SafeString:
    """A coloured badge; the CSS class keeps only letters, digits and ``_``."""
    return format_html(
        '<span class="tasker-badge tasker-severity-{}">{}</span>',
        "".join(c for c in severity.lower() if c.isalnum() or c == "_"),
        severity,
    )


def _values_text(values: object) -> str:
    if not isinstance(values, dict) or not values:
        return "—"
    parts = []
    for key, value in sorted(values.items()):
        shown = (
            "no data" if value is None else (f"{value:.4g}" if isinstance(value, float) else value)
        )
        parts.append(f"{key}={shown}")
    return ", ".join(str(p) for p in parts)


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = (
        "fired_at",
        "name",
        "template_label",
        "severity_badge",
        "status_badge",
        "values_seen",
        "last_evaluated_at",
        "resolved_at",
    )
    list_display_links = ("fired_at", "name")
    list_filter = (
        "status",
        "severity",
        "namespace",
        "template",
        ("fired_at", admin.DateFieldListFilter),
    )
    list_per_page = 100
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    search_fields = ("name", "template", "namespace", "description")
    search_help_text = _("Alert name, template, namespace or description.")
    fields = (
        "name",
        "template_label",
        "severity_badge",
        "status_badge",
        "description",
        "condition",
        "values_block",
        "fired_at",
        "last_evaluated_at",
        "resolved_at",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ("tasker_django/admin.css", "tasker_django/alerts.css")}

    @admin.display(description=_("template"), ordering="template")
    def template_label(self, obj: Alert) -> str:
        return f"{obj.namespace}/{obj.template}"

    @admin.display(description=_("severity"), ordering="severity")
    def severity_badge(self, obj: Alert) -> SafeString:
        return severity_badge(obj.severity)

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Alert) -> SafeString:
        return display.badge(obj.status)

    @admin.display(description=_("values"))
    def values_seen(self, obj: Alert) -> str:
        return display.truncate(_values_text(obj.values), 120)

    @admin.display(description=_("values seen"))
    def values_block(self, obj: Alert) -> SafeString:
        return display.json_block(obj.values)
