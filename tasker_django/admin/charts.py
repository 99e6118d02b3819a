"""A small server-rendered SVG bar chart for the dashboard (pure, escaped)."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import escape


def render_bar_chart(
    series: Sequence[tuple[str, int]],
    *,
    title: str = "",
    bar_width: int = 10,
    gap: int = 2,
    height: int = 120,
    colour: str = "#2f9e44",
) -> str:
    """A bar per ``(label, value)``; the axis shows the peak and every tenth label."""
    top, bottom, left = 16, 22, 36
    peak = max((value for _, value in series), default=0)
    scale = (height - top - bottom) / peak if peak else 0.0
    width = left + len(series) * (bar_width + gap) + 8
    baseline = height - bottom
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="tasker-chart" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family="system-ui, sans-serif" font-size="10" aria-label="{escape(title)}">',
        f"<title>{escape(title or 'chart')}</title>",
        f'<line x1="{left}" y1="{baseline}" x2="{width - 4}" y2="{baseline}" stroke="#adb5bd"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" fill="#6c757d">{peak}</text>',
        f'<text x="{left - 4}" y="{baseline}" text-anchor="end" fill="#6c757d">0</text>',
    ]
    for i, (label, value) in enumerate(series):
        x = left + i * (bar_width + gap)
        bar = round(value * scale)
        if bar:
            out.append(
                f'<rect x="{x}" y="{baseline - bar}" width="{bar_width}" height="{bar}" '
                f'fill="{colour}"><title>{escape(label)}: {value}</title></rect>'
            )
        if i % 10 == 0:
            out.append(f'<text x="{x}" y="{height - 6}" fill="#6c757d">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)
