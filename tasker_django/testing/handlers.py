"""Handlers for tests: importing this module registers them."""

from __future__ import annotations

from typing import Any

from ..handlers.base import StepHandler


class NoopHandler(StepHandler, name="tasker.noop"):
    """Returns ``{"ok": True}`` plus its configured ``result`` mapping."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        return {"ok": True, **dict(self.config.get("result") or {})}
