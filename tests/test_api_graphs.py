"""Graphs: the pure renderers (SVG, Mermaid) and the task and template graph endpoints."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from tasker_django import create_task
from tasker_django.graphs import GraphNode, render_mermaid, render_svg
from tests.api_support import assert_error, failed_task, step, url

pytest_plugins = ["tests.api_fixtures"]

SVG = "{http://www.w3.org/2000/svg}"
EVIL = '<script>alert("x")</script>&#'


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314  (our own output)


def test_render_svg_lays_out_levels_left_to_right() -> None:
    nodes = [
        GraphNode("a", "complete", "/steps/1/"),
        {"name": "b", "status": "error"},
        GraphNode("c"),
        GraphNode("d", "pending"),
    ]
    edges = [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    root = parse(render_svg(nodes, edges, [["a"], ["b", "c"], ["d"]], title="demo"))
    rects = {g.find(f"{SVG}title").text: g.find(f"{SVG}rect") for g in root.iter(f"{SVG}g")}
    x = {name.split(" ")[0]: int(rect.get("x")) for name, rect in rects.items()}
    assert x["a"] < x["b"] == x["c"] < x["d"]
    assert rects["b (error)"].get("fill") == "#fee2e2"
    assert len(root.findall(f"{SVG}path")) == 4
    links = root.findall(f"{SVG}a")
    assert [a.get("href") for a in links] == ["/steps/1/"]


def test_render_svg_escapes_every_label_and_drops_unsafe_links() -> None:
    nodes = [GraphNode(EVIL, 'x"><script>', "javascript:alert(1)"), GraphNode("ok\x01", url="//x")]
    svg = render_svg(nodes, [(EVIL, "ok\x01")], [[EVIL], ["ok\x01"]], title=EVIL)
    assert "<script>" not in svg and "javascript:" not in svg and "//x" not in svg
    root = parse(svg)  # well-formed XML, control characters replaced
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert '<script>alert("x")</scr…' in texts
    assert root.get("aria-label") == EVIL


def test_render_svg_edge_cases() -> None:
    assert "no steps" in render_svg([], [], [])
    # Nodes missing from the levels still get drawn; unknown edges are ignored.
    root = parse(render_svg([GraphNode("a"), GraphNode("b")], [("a", "zzz")], [["a"]]))
    assert len(root.findall(f"{SVG}g")) == 2 and not root.findall(f"{SVG}path")


def test_render_mermaid_escapes_labels() -> None:
    text = render_mermaid([GraphNode(EVIL, "in_progress"), GraphNode("b")], [(EVIL, "b")])
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    assert (
        lines[1]
        == '    n0["#lt;script#gt;alert(#quot;x#quot;)#lt;/script#gt;#amp;#35;<br/>in progress"]'
    )
    assert "    n0 --> n1" in lines
    assert "    class n0 in_progress" in lines
    with pytest.raises(ValueError):
        render_mermaid([], [], direction="UP")


@pytest.mark.django_db
def test_task_graph_endpoints(api_templates: Any, api_admin: Any) -> None:
    task = failed_task()
    graph = api_admin.get(url(f"tasks/{task.pk}/graph/")).json()
    charge = step(task, "charge")
    assert graph["nodes"][0] == {
        "id": charge.pk,
        "name": "charge",
        "status": "error",
        "url": url(f"steps/{charge.pk}/"),
        "level": 0,
    }
    assert graph["edges"] == [{"parent": "charge", "child": "receipt"}]
    assert graph["levels"] == [["charge"], ["receipt"]]
    mermaid = api_admin.get(url(f"tasks/{task.pk}/graph/mermaid/"))
    assert mermaid["Content-Type"] == "text/plain; charset=utf-8"
    assert 'n0["charge<br/>error"]' in mermaid.content.decode()
    svg = api_admin.get(url(f"tasks/{task.pk}/graph/svg/"), HTTP_ACCEPT="text/html")
    assert svg["Content-Type"] == "image/svg+xml; charset=utf-8"
    assert svg["Content-Security-Policy"].startswith("default-src 'none'")
    root = parse(svg.content.decode())
    assert [a.get("href") for a in root.findall(f"{SVG}a")] == [
        url(f"steps/{charge.pk}/"),
        url(f"steps/{step(task, 'receipt').pk}/"),
    ]
    for suffix in ("graph/", "graph/mermaid/", "graph/svg/"):
        assert_error(api_admin.get(url(f"tasks/999999/{suffix}")), 404)


@pytest.mark.django_db
def test_template_graph_endpoints(load_template: Any, api_templates: Any, api_admin: Any) -> None:
    load_template(
        f"""
name: evil
namespace: api
version: "1.0.0"
step_templates:
  - {{name: '{EVIL}', handler_class: test.echo}}
  - {{name: after, handler_class: test.echo, depends_on_step: '{EVIL}'}}
"""
    )
    base = "templates/api/evil/1.0.0/graph/"
    graph = api_admin.get(url(base)).json()
    assert [n["name"] for n in graph["nodes"]] == [EVIL, "after"]
    assert {n["status"] for n in graph["nodes"]} == {None}
    svg = api_admin.get(url(f"{base}svg/")).content.decode()
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    parse(svg)
    mermaid = api_admin.get(url(f"{base}mermaid/")).content.decode()
    assert "<script>" not in mermaid
    task = create_task("evil", namespace="api")  # a task of it: the same DAG, with statuses
    task_svg = api_admin.get(url(f"tasks/{task.pk}/graph/svg/")).content.decode()
    assert "<script>" not in task_svg and "enqueued" in task_svg
    parse(task_svg)
    for suffix in ("", "svg/", "mermaid/"):
        assert_error(api_admin.get(url(f"templates/api/evil/2.0.0/graph/{suffix}")), 404)
