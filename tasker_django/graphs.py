"""Drawing a workflow's DAG: a layered SVG and Mermaid text, rendered on the server.

Pure functions (no models, no database, no JavaScript): the API serves them for tasks
and templates and the admin embeds the SVG. Every piece of text that reaches the output
(step names, statuses, URLs) is escaped, so a step named ``<script>`` stays text.

Nodes are :class:`GraphNode` instances, mappings with the same keys, or any object with
``name`` (and optionally ``status``, ``url``, ``detail``) attributes. Edges are
``(parent, child)`` name pairs. Levels are lists of names, as returned by
:func:`tasker_django.definitions.graph.dependency_levels`: level 0 holds the steps
without parents and a step sits one level right of its deepest parent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.utils.html import escape

__all__ = ["STATUS_COLOURS", "GraphNode", "render_mermaid", "render_svg"]


@dataclass(frozen=True)
class GraphNode:
    """A step in a drawing: ``status`` colours it, ``url`` makes it a link,
    ``detail`` is the second line (the status when empty)."""

    name: str
    status: str = ""
    url: str = ""
    detail: str = ""


#: status -> (fill, stroke). Unknown statuses and template nodes use ``""``.
STATUS_COLOURS: dict[str, tuple[str, str]] = {
    "": ("#f8fafc", "#475569"),
    "pending": ("#ffffff", "#9ca3af"),
    "enqueued": ("#f3e8ff", "#9333ea"),
    "in_progress": ("#fef9c3", "#ca8a04"),
    "waiting_for_retry": ("#ffedd5", "#ea580c"),
    "complete": ("#dcfce7", "#16a34a"),
    "resolved_manually": ("#e0f2fe", "#0284c7"),
    "error": ("#fee2e2", "#dc2626"),
    "cancelled": ("#f3f4f6", "#6b7280"),
}

NODE_WIDTH = 184
NODE_HEIGHT = 46
GAP_X = 64
GAP_Y = 20
MARGIN = 16
#: Characters of a name that fit in a node at the font size used (longer ones get "…").
MAX_LABEL_CHARS = 24

# Characters XML 1.0 does not allow, even escaped.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_SAFE_URL = re.compile(r"^(?:https?://|/(?!/))", re.IGNORECASE)


def _coerce(node: Any) -> GraphNode:
    if isinstance(node, GraphNode):
        return node
    if isinstance(node, Mapping):
        get = node.get
    else:

        def get(key: str, default: Any = None) -> Any:
            return getattr(node, key, default)

    return GraphNode(
        name=str(get("name")),
        status=str(get("status") or ""),
        url=str(get("url") or ""),
        detail=str(get("detail") or ""),
    )


def _text(value: str) -> str:
    """``value`` escaped for XML text and attribute values."""
    return str(escape(_XML_INVALID.sub("\ufffd", value)))


def _truncate(value: str, limit: int = MAX_LABEL_CHARS) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _ordered_levels(names: list[str], edges: list[tuple[str, str]], levels: Any) -> list[list[str]]:
    """Levels restricted to known nodes (unplaced nodes go last), each level ordered by
    the mean position of its parents (one barycentre pass: fewer crossing edges)."""
    known = set(names)
    placed: set[str] = set()
    rows: list[list[str]] = []
    for level in levels:
        row = [n for n in level if n in known and n not in placed]
        placed.update(row)
        if row:
            rows.append(row)
    rest = [n for n in names if n not in placed]
    if rest:
        rows.append(rest)
    parents: dict[str, list[str]] = {}
    for parent, child in edges:
        parents.setdefault(child, []).append(parent)
    position: dict[str, int] = {}
    for row in rows:
        original = {n: i for i, n in enumerate(row)}

        def key(name: str, original: dict[str, int] = original) -> tuple[float, int]:
            seen = [position[p] for p in parents.get(name, ()) if p in position]
            centre = sum(seen) / len(seen) if seen else float(original[name])
            return (centre, original[name])

        row.sort(key=key)
        for i, name in enumerate(row):
            position[name] = i
    return rows


def render_svg(
    nodes: Iterable[Any],
    edges: Iterable[tuple[str, str]],
    levels: Sequence[Sequence[str]],
    *,
    title: str = "",
) -> str:
    """A standalone SVG document of the DAG, laid out in levels from left to right."""
    graph_nodes = [_coerce(n) for n in nodes]
    by_name = {n.name: n for n in graph_nodes}
    edge_list = [(str(a), str(b)) for a, b in edges if a in by_name and b in by_name]
    rows = _ordered_levels(list(by_name), edge_list, levels)
    tallest = max((len(r) for r in rows), default=0)
    width = MARGIN * 2 + max(len(rows), 1) * NODE_WIDTH + max(len(rows) - 1, 0) * GAP_X
    height = MARGIN * 2 + max(tallest, 1) * NODE_HEIGHT + max(tallest - 1, 0) * GAP_Y
    origin: dict[str, tuple[int, int]] = {}
    for column, row in enumerate(rows):
        # Centre short columns vertically.
        offset = (tallest - len(row)) * (NODE_HEIGHT + GAP_Y) // 2
        for i, name in enumerate(row):
            origin[name] = (
                MARGIN + column * (NODE_WIDTH + GAP_X),
                MARGIN + offset + i * (NODE_HEIGHT + GAP_Y),
            )
    label = _text(title or "workflow graph")
    out = [
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{label}">',
        f"<title>{label}</title>",
        "<style>"
        ".tasker-node text{font-family:system-ui,-apple-system,'Segoe UI',sans-serif}"
        ".tasker-name{font-size:13px;font-weight:600;fill:#111827}"
        ".tasker-detail{font-size:11px;fill:#4b5563}"
        ".tasker-edge{fill:none;stroke:#94a3b8;stroke-width:1.5}"
        "</style>",
        '<defs><marker id="tasker-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#94a3b8"/></marker></defs>',
    ]
    if not graph_nodes:
        out.append(
            f'<text x="{MARGIN}" y="{MARGIN + NODE_HEIGHT // 2}" '
            'font-family="sans-serif" font-size="13" fill="#6b7280">no steps</text>'
        )
    for parent, child in edge_list:
        (px, py), (cx, cy) = origin[parent], origin[child]
        x1, y1 = px + NODE_WIDTH, py + NODE_HEIGHT // 2
        x2, y2 = cx, cy + NODE_HEIGHT // 2
        bend = max((x2 - x1) // 2, 24)
        out.append(
            f'<path class="tasker-edge" marker-end="url(#tasker-arrow)" '
            f'd="M {x1} {y1} C {x1 + bend} {y1}, {x2 - bend} {y2}, {x2} {y2}">'
            f"<title>{_text(parent)} → {_text(child)}</title></path>"
        )
    for name in by_name:
        node = by_name[name]
        x, y = origin[name]
        fill, stroke = STATUS_COLOURS.get(node.status, STATUS_COLOURS[""])
        detail = node.detail or node.status.replace("_", " ")
        tooltip = node.name + (f" ({node.status})" if node.status else "")
        parts = [
            f'<g class="tasker-node" data-status="{_text(node.status)}">',
            f"<title>{_text(tooltip)}</title>",
            f'<rect x="{x}" y="{y}" width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="6" ry="6" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>',
            f'<text class="tasker-name" x="{x + 10}" y="{y + 19}">'
            f"{_text(_truncate(node.name))}</text>",
        ]
        if detail:
            parts.append(
                f'<text class="tasker-detail" x="{x + 10}" y="{y + 36}">'
                f"{_text(_truncate(detail, MAX_LABEL_CHARS + 4))}</text>"
            )
        parts.append("</g>")
        if node.url and _SAFE_URL.match(node.url):
            href = _text(node.url)
            parts = [f'<a href="{href}" xlink:href="{href}">', *parts, "</a>"]
        out.extend(parts)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _mermaid_label(value: str) -> str:
    """Text for a quoted Mermaid label: entity codes for the characters Mermaid reads."""
    value = _XML_INVALID.sub(" ", value).replace("\r", " ").replace("\n", " ")
    replacements = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;"}
    return "".join(replacements.get(ch, ch) for ch in value)


def render_mermaid(
    nodes: Iterable[Any], edges: Iterable[tuple[str, str]], *, direction: str = "LR"
) -> str:
    """Mermaid flowchart text of the DAG; nodes are classed by status."""
    if direction not in ("LR", "RL", "TB", "BT", "TD"):
        raise ValueError(f"unknown Mermaid direction {direction!r}")
    graph_nodes = [_coerce(n) for n in nodes]
    ids = {n.name: f"n{i}" for i, n in enumerate(graph_nodes)}
    lines = [f"flowchart {direction}"]
    for node in graph_nodes:
        label = _mermaid_label(node.name) + (
            f"<br/>{_mermaid_label(node.status.replace('_', ' '))}" if node.status else ""
        )
        lines.append(f'    {ids[node.name]}["{label}"]')
    for parent, child in edges:
        if parent in ids and child in ids:
            lines.append(f"    {ids[parent]} --> {ids[child]}")
    used = sorted({n.status for n in graph_nodes if n.status in STATUS_COLOURS and n.status})
    for status in used:
        fill, stroke = STATUS_COLOURS[status]
        lines.append(f"    classDef {status} fill:{fill},stroke:{stroke}")
    for status in used:
        members = ",".join(ids[n.name] for n in graph_nodes if n.status == status)
        lines.append(f"    class {members} {status}")
    return "\n".join(lines) + "\n"
