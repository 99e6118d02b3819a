"""Masking of sensitive values in data shown to people (admin, API, logs, events, errors).

A key is sensitive when its normalised name (lower case, ``-`` and spaces as ``_``)
equals one of the sensitive names or ends with ``_<name>`` (``card_token``,
``user_password``). The names are ``TASKER["SENSITIVE_FIELDS"]`` plus those a template
declares under ``security.sensitive_fields``. Free text (error messages, log lines)
is scanned for card numbers (13 to 19 digits passing the Luhn check).

Users with the ``tasker_django.view_sensitive_data`` permission see plain values in
the admin and the API; everything else gets masked copies. Masking never changes the
stored data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "********"

#: Names masked when ``TASKER["SENSITIVE_FIELDS"]`` is not set.
DEFAULT_SENSITIVE_FIELDS: tuple[str, ...] = (
    "card_number",
    "pan",
    "cvv",
    "cvv2",
    "cvc",
    "card_token",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "secret",
    "client_secret",
    "password",
    "passphrase",
    "pin",
    "ssn",
    "account_number",
    "iban",
    "authorization",
)

PERMISSION = "tasker_django.view_sensitive_data"

_CARD_RE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


def normalise(key: str) -> str:
    return re.sub(r"[\s-]+", "_", str(key).strip().lower())


def configured_fields() -> frozenset[str]:
    from ..conf import tasker_settings

    fields = tasker_settings.SENSITIVE_FIELDS
    if fields is None:
        fields = DEFAULT_SENSITIVE_FIELDS
    return frozenset(normalise(k) for k in fields)


def template_fields(template: Mapping[str, Any] | None) -> frozenset[str]:
    """Fields a template (its ``to_dict()``) declares under ``security.sensitive_fields``."""
    if not template:
        return frozenset()
    security = (template.get("sections") or {}).get("security") or {}
    declared = security.get("sensitive_fields") if isinstance(security, Mapping) else None
    return frozenset(normalise(k) for k in declared or () if isinstance(k, str))


def sensitive_names(template: Mapping[str, Any] | None = None) -> frozenset[str]:
    return configured_fields() | template_fields(template)


def is_sensitive(key: str, names: Iterable[str]) -> bool:
    key = normalise(key)
    return any(key == n or key.endswith("_" + n) for n in names)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def mask_text(text: str) -> str:
    """``text`` with card numbers replaced by ``************1111`` (last four kept)."""
    if not text or not any(ch.isdigit() for ch in text):
        return text

    def repl(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        if not _luhn(digits):
            return m.group(0)
        return "*" * (len(digits) - 4) + digits[-4:]

    return _CARD_RE.sub(repl, text)


def mask_value(value: Any) -> Any:
    if value is None:
        return None
    return MASK


def mask(data: Any, names: Iterable[str] | None = None) -> Any:
    """A masked deep copy of JSON-like ``data`` (dicts, lists, scalars).

    ``names`` defaults to the configured sensitive fields.
    """
    names = frozenset(names) if names is not None else configured_fields()
    return _mask(data, names)


def _mask(data: Any, names: frozenset[str]) -> Any:
    if isinstance(data, Mapping):
        return {
            k: (mask_value(v) if is_sensitive(k, names) else _mask(v, names))
            for k, v in data.items()
        }
    if isinstance(data, (list, tuple)):
        return [_mask(v, names) for v in data]
    if isinstance(data, str):
        return mask_text(data)
    return data


def can_view_sensitive(user: Any) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False)) and bool(
        user.has_perm(PERMISSION)
    )


def for_user(data: Any, user: Any, template: Mapping[str, Any] | None = None) -> Any:
    """``data`` as ``user`` may see it: plain with the permission, else masked."""
    if can_view_sensitive(user):
        return data
    return mask(data, sensitive_names(template))
