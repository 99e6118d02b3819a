"""Safe YAML loading that keeps the node tree, so any key path maps to a line number."""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import PathPart, TemplateError, TemplateIssue, format_path

# The C loader is the same safe constructor on a faster parser.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Upper bound on the size of the document once aliases are expanded.
MAX_EXPANDED_NODES = 1_000_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class LoadedYaml:
    """A parsed document: plain data, its node tree and non-fatal issues (duplicate keys)."""

    data: Any
    root: Node | None
    source: str
    issues: list[TemplateIssue] = field(default_factory=list)

    def node(self, path: Sequence[PathPart]) -> tuple[Node | None, int | None]:
        """The deepest existing node on ``path`` and its line (key line for mapping entries)."""
        node = self.root
        if node is None:
            return None, None
        line = node.start_mark.line + 1
        for part in path:
            nxt: Node | None = None
            if isinstance(node, MappingNode):
                for key, value in node.value:  # last one wins, as in construction
                    if isinstance(key, ScalarNode) and key.value == str(part):
                        nxt, line = value, key.start_mark.line + 1
            elif (
                isinstance(node, SequenceNode)
                and isinstance(part, int)
                and 0 <= part < len(node.value)
            ):
                nxt = node.value[part]
                line = nxt.start_mark.line + 1
            if nxt is None:
                break
            node = nxt
        return node, line

    def line(self, path: Sequence[PathPart]) -> int | None:
        return self.node(path)[1]

    def scalar_text(self, path: Sequence[PathPart]) -> str | None:
        """The scalar exactly as written at ``path`` (``1.10`` stays ``"1.10"``)."""
        node = self.root
        for part in path:
            if isinstance(node, MappingNode):
                found = [v for k, v in node.value if isinstance(k, ScalarNode) and k.value == part]
                node = found[-1] if found else None
            else:
                return None
        return node.value if isinstance(node, ScalarNode) else None

    def issue(self, path: Sequence[PathPart], message: str) -> TemplateIssue:
        return TemplateIssue(self.source, self.line(path), format_path(path), message)


def _yaml_error(source: str, exc: yaml.YAMLError) -> TemplateIssue:
    line = None
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        text = "; ".join(p for p in (exc.context, exc.problem) if p)
    else:
        text = str(exc)
    return TemplateIssue(source, line, "", f"invalid YAML: {text or type(exc).__name__}")


def load_yaml(text: str, source: str = "<string>") -> LoadedYaml:
    """Parse one YAML document with safe constructors; raise ``TemplateError`` if unusable."""
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise TemplateError([_yaml_error(source, exc)]) from None
        loaded = LoadedYaml(None, root, source)
        if root is None:
            raise TemplateError([TemplateIssue(source, None, "", "the document is empty")])
        _check_nodes(loaded)
        try:
            loaded.data = loader.construct_document(root)
        except yaml.YAMLError as exc:
            raise TemplateError([*loaded.issues, _yaml_error(source, exc)]) from None
        fatal = _check_json(loaded)
    except RecursionError:
        raise TemplateError([TemplateIssue(source, None, "", "the document is nested too deeply")])
    finally:
        loader.dispose()
    if fatal:
        raise TemplateError([*loaded.issues, *fatal])
    return loaded


def _check_nodes(loaded: LoadedYaml) -> None:
    """Duplicate keys (kept), recursive aliases and alias bombs (fatal)."""
    sizes: dict[int, int] = {}
    on_stack: set[int] = set()
    fatal: list[TemplateIssue] = []

    def walk(node: Node, path: tuple[PathPart, ...]) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in on_stack:
            line = node.start_mark.line + 1
            fatal.append(TemplateIssue(loaded.source, line, format_path(path), "recursive alias"))
            return 1
        size = 1
        on_stack.add(id(node))
        if isinstance(node, MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if isinstance(key, ScalarNode):
                    if key.tag != _MERGE_TAG:
                        ident = (key.tag, key.value)
                        line = key.start_mark.line + 1
                        if ident in seen:
                            loaded.issues.append(
                                TemplateIssue(
                                    loaded.source,
                                    line,
                                    format_path((*path, key.value)),
                                    f"duplicate key {key.value!r} (first on line {seen[ident]})",
                                )
                            )
                        else:
                            seen[ident] = line
                    size += walk(value, (*path, key.value))
                else:
                    size += walk(key, path) + walk(value, path)
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                size += walk(item, (*path, index))
        on_stack.discard(id(node))
        sizes[id(node)] = size
        return size

    total = walk(loaded.root, ()) if loaded.root is not None else 0
    if total > MAX_EXPANDED_NODES and not fatal:
        message = f"the document expands to more than {MAX_EXPANDED_NODES} nodes through aliases"
        fatal.append(TemplateIssue(loaded.source, None, "", message))
    if fatal:
        raise TemplateError([*loaded.issues, *fatal])


def _check_json(loaded: LoadedYaml) -> list[TemplateIssue]:
    """Values JSON cannot hold exactly (dates, binary, sets, NaN, non-string keys)."""
    issues: list[TemplateIssue] = []
    seen: set[int] = set()

    def walk(value: Any, path: tuple[PathPart, ...]) -> None:
        if isinstance(value, dict):
            if id(value) in seen:
                return
            seen.add(id(value))
            for key, item in value.items():
                if not isinstance(key, str):
                    issues.append(loaded.issue(path, f"mapping key {key!r} must be a string"))
                    continue
                walk(item, (*path, key))
        elif isinstance(value, list):
            if id(value) in seen:
                return
            seen.add(id(value))
            for index, item in enumerate(value):
                walk(item, (*path, index))
        elif isinstance(value, float) and not math.isfinite(value):
            issues.append(loaded.issue(path, f"{value} is not allowed (JSON has no NaN/infinity)"))
        elif isinstance(value, datetime.date):
            issues.append(
                loaded.issue(path, f"a date/time value is not allowed here; quote it: '{value}'")
            )
        elif value is not None and not isinstance(value, str | int | float | bool):
            kind = type(value).__name__
            issues.append(loaded.issue(path, f"a {kind} value is not allowed (not JSON)"))

    walk(loaded.data, ())
    return issues
