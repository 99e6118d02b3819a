"""Sort key for template versions: semantic versions, then anything else by string."""

from __future__ import annotations

import re
from typing import Any

_SEMVER = re.compile(
    r"^v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)


def _prerelease_key(pre: str | None) -> tuple[Any, ...]:
    if pre is None:
        return (1,)  # a release sorts above all of its pre-releases
    parts: list[tuple[int, int, str]] = []
    for ident in pre.split("."):
        if ident.isdigit():
            parts.append((0, int(ident), ""))  # numeric identifiers sort below alphanumeric
        else:
            parts.append((1, 0, ident))
    return (0, tuple(parts))


def version_key(v: str) -> tuple[Any, ...]:
    """``sorted(versions, key=version_key)`` puts ``1.9.0`` before ``1.10.0``.

    Pre-releases sort below their release (``1.0.0-rc1 < 1.0.0``); ``1`` and ``1.2``
    count as ``1.0.0`` and ``1.2.0``; strings that are not versions sort below all
    versions, by string. The raw string breaks remaining ties, so the key is total.
    """
    text = str(v).strip()
    match = _SEMVER.match(text)
    if match is None:
        return (0, text)
    major, minor, patch, pre = match.groups()
    return (1, int(major), int(minor or 0), int(patch or 0), _prerelease_key(pre), text)
