"""A JSON parser that refuses bodies over the API's size limit before reading them whole."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from ..conf import tasker_settings
from .errors import PayloadTooLarge

#: Room for the fields around the context or results in a request body.
ENVELOPE_BYTES = 65_536


def request_limit() -> int:
    """Largest request body accepted: the larger JSON limit plus the envelope."""
    return (
        max(
            int(tasker_settings.API_MAX_CONTEXT_BYTES),
            int(tasker_settings.API_MAX_RESULTS_BYTES),
        )
        + ENVELOPE_BYTES
    )


def _strict_constant(value: str) -> Any:
    raise ValueError(f"Out of range float values are not JSON compliant: {value}")


class LimitedJSONParser(JSONParser):
    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        limit = request_limit()
        too_large = PayloadTooLarge(
            f"The request body is larger than {limit} bytes (TASKER['API_MAX_CONTEXT_BYTES'] / "
            "['API_MAX_RESULTS_BYTES'] plus 64 KiB)."
        )
        request = (parser_context or {}).get("request")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except ValueError:
            length = 0
        if length > limit:
            raise too_large
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise too_large
        encoding = (parser_context or {}).get("encoding") or "utf-8"
        try:
            return json.loads(raw.decode(encoding), parse_constant=_strict_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - {exc}")
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply")
