"""Pure DAG helpers over step names: cycle detection, stable topological order, levels.

``nodes`` is a sequence of unique names (its order is the tie-break order);
``edges`` are ``(parent, child)`` pairs. An edge naming an unknown node, or a
repeated node, raises ``ValueError``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

Edge = tuple[str, str]


def _index(nodes: Sequence[str], edges: Iterable[Edge]) -> tuple[dict[str, int], list[list[int]]]:
    position: dict[str, int] = {}
    for node in nodes:
        if node in position:
            raise ValueError(f"duplicate node {node!r}")
        position[node] = len(position)
    children: list[list[int]] = [[] for _ in position]
    for parent, child in edges:
        if parent not in position or child not in position:
            missing = parent if parent not in position else child
            raise ValueError(f"edge ({parent!r}, {child!r}) names unknown node {missing!r}")
        children[position[parent]].append(position[child])
    return position, children


def find_cycle(nodes: Sequence[str], edges: Iterable[Edge]) -> list[str] | None:
    """A cycle as a closed path in edge direction (``["a", "b", "a"]``), or ``None``."""
    names = list(nodes)
    _, children = _index(names, edges)
    white, grey, black = 0, 1, 2
    colour = [white] * len(names)
    for start in range(len(names)):
        if colour[start] != white:
            continue
        colour[start] = grey
        path = [start]
        iters = [iter(children[start])]
        while iters:
            for child in iters[-1]:
                if colour[child] == grey:
                    cycle = [*path[path.index(child) :], child]
                    return [names[i] for i in cycle]
                if colour[child] == white:
                    colour[child] = grey
                    path.append(child)
                    iters.append(iter(children[child]))
                    break
            else:
                colour[path.pop()] = black
                iters.pop()
    return None


def _cycle_error(nodes: Sequence[str], edges: Sequence[Edge]) -> ValueError:
    cycle = find_cycle(nodes, edges) or []
    return ValueError("dependency cycle: " + " -> ".join(cycle))


def topological_order(nodes: Sequence[str], edges: Iterable[Edge]) -> list[str]:
    """Parents before children; among ready nodes, the order of ``nodes``."""
    names = list(nodes)
    edge_list = list(edges)
    _, children = _index(names, edge_list)
    indegree = [0] * len(names)
    for kids in children:
        for child in kids:
            indegree[child] += 1
    ready = [i for i, d in enumerate(indegree) if d == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        current = heapq.heappop(ready)
        order.append(current)
        for child in children[current]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, child)
    if len(order) != len(names):
        raise _cycle_error(names, edge_list)
    return [names[i] for i in order]


def dependency_levels(nodes: Sequence[str], edges: Iterable[Edge]) -> list[list[str]]:
    """Level 0 has no parents; a node sits one level below its deepest parent."""
    names = list(nodes)
    edge_list = list(edges)
    order = topological_order(names, edge_list)
    position, children = _index(names, edge_list)
    level = [0] * len(names)
    for name in order:
        current = position[name]
        for child in children[current]:
            level[child] = max(level[child], level[current] + 1)
    levels: list[list[str]] = [[] for _ in range(max(level, default=-1) + 1)]
    for i, name in enumerate(names):
        levels[level[i]].append(name)
    return levels
