"""Shared bits of the tasker management commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError


def parse_json_arg(value: str | None, what: str) -> Any:
    """``value`` is JSON text or ``@path`` to a JSON file."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {what} file {value[1:]}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{what} is not valid JSON: {exc}") from None


def parse_json_object(value: str | None, what: str) -> dict[str, Any]:
    """Like :func:`parse_json_arg`, but the JSON must be an object (``{...}``)."""
    data = parse_json_arg(value, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CommandError(f"{what} must be a JSON object ({{...}}), got {type(data).__name__}")
    return data
