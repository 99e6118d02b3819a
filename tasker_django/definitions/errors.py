"""Problems found in a task template: one ``TemplateIssue`` each, raised together."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

PathPart = str | int


def format_path(path: Sequence[PathPart]) -> str:
    """``("steps", 2, "depends_on_steps", 0)`` -> ``"steps[2].depends_on_steps[0]"``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True)
class TemplateIssue:
    """One problem, located by source file, line and key path."""

    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where = f"{where}:{self.line}" if where else str(self.line)
        parts = [p for p in (where, self.path) if p]
        return ": ".join([*parts, self.message])


def _sort_key(issue: TemplateIssue) -> int:
    return 0 if issue.line is None else issue.line


class TemplateError(ValueError):
    """Every problem of one template; ``str()`` lists them one per line, sorted by line."""

    def __init__(self, issues: Iterable[TemplateIssue]) -> None:
        self.issues: list[TemplateIssue] = sorted(issues, key=_sort_key)
        super().__init__("\n".join(str(i) for i in self.issues) or "invalid task template")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.issues,))
