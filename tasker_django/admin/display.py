"""Small HTML pieces the admin pages share: badges, progress bars, JSON, durations.

Everything goes through ``format_html`` / ``escape``: values are user data.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..models import AttemptOutcome, StepStatus, TaskStatus
from ..security.access import current_viewer as current_viewer
from ..security.access import shown, shown_text

_LABELS: dict[str, str] = {
    **{str(value): str(label) for value, label in TaskStatus.choices},
    **{str(value): str(label) for value, label in StepStatus.choices},
    **{str(value): str(label) for value, label in AttemptOutcome.choices},
}


def status_label(status: str) -> str:
    return _LABELS.get(status, status)


def badge(status: str) -> SafeString:
    """A coloured status badge (colours in ``tasker_django/admin.css``)."""
    return format_html(
        '<span class="tasker-badge tasker-status-{}">{}</span>',
        "".join(c for c in status if c.isalnum() or c == "_"),
        status_label(status),
    )


def progress_bar(done: int, total: int) -> SafeString:
    percent = 100 if not total else round(100 * done / total)
    return format_html(
        '<span class="tasker-progress" title="{} of {} steps finished">'
        '<span class="tasker-progress-bar" style="width: {}%"></span></span>'
        '<span class="tasker-progress-text">{}/{}</span>',
        done,
        total,
        percent,
        done,
        total,
    )


def pretty_json(value: Any) -> str:
    """Indented JSON, masked for the current viewer (security.access.viewing)."""
    return json.dumps(shown(value), indent=2, sort_keys=True, ensure_ascii=False, default=str)


def json_block(value: Any, empty: str = "—") -> SafeString:
    if value is None or value == {} or value == []:
        return format_html('<span class="tasker-muted">{}</span>', empty)
    return format_html('<pre class="tasker-json">{}</pre>', pretty_json(value))


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def short_time(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """``2025-01-31 14:05:09`` in the current time zone."""
    if value is None:
        return "—"
    return timezone.localtime(value).strftime(fmt)


def duration_between(start: datetime | None, end: datetime | None, now: datetime) -> str:
    if start is None:
        return "—"
    delta: timedelta = (end or now) - start
    text = format_duration(max(delta.total_seconds(), 0.0))
    return text if end else f"{text} (running)"


def error_text(error: dict[str, Any] | None) -> str:
    """``ErrorClass: message`` of a ``last_error`` dict."""
    if not error:
        return ""
    cls = str(error.get("error_class") or "")
    message = shown_text(str(error.get("message") or ""))
    return f"{cls}: {message}" if cls and message else cls or message


def truncate(text: str, limit: int = 120) -> str:
    """``text`` (card numbers masked for the current viewer) cut to ``limit`` characters."""
    text = shown_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
