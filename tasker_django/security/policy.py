"""A template's ``security`` section as the app acts on it, cached per process.

``SecurityPolicy`` is pure (built from the template dict). ``policies()`` returns
the policy of every stored template revision with one light query (ids and content
hashes); a revision's template is read once per process (I10: it never changes).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import crypto
from .masking import template_fields

_DURATION = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*_?\s*(s|sec|seconds?|m|min|minutes?|h|hours?|d|days?|w|weeks?|"
    r"y|years?)\s*$",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 365 * 86400}

#: Names of card data: masked for everyone but superusers in PCI mode.
CARD_FIELDS = frozenset({"card_number", "pan", "cvv", "cvv2", "cvc", "card_token", "track_data"})


def parse_duration(value: Any) -> float | None:
    """Seconds of ``"90d"``, ``"30d"``, ``"7_years"``, ``"12h"`` or a number of seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value > 0 else None
    match = _DURATION.match(str(value))
    if not match:
        return None
    unit = match.group(2).lower()
    unit = "m" if unit.startswith("min") else unit[0]
    return float(match.group(1)) * _UNIT_SECONDS[unit]


def _section(security: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = security.get(name)
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class SecurityPolicy:
    encrypt: bool = False
    pci: bool = False
    #: Seconds after which finished tasks are pruned (pci_compliance.data_retention).
    retention_seconds: float | None = None
    authentication_required: bool = False
    #: Django group names allowed to see and act on the template's tasks; None: anyone.
    allowed_roles: frozenset[str] | None = None
    sensitive_fields: frozenset[str] = frozenset()

    @property
    def restricted(self) -> bool:
        return self.allowed_roles is not None


def build_security_policy(template: Mapping[str, Any] | None) -> SecurityPolicy:
    sections = (template or {}).get("sections") or {}
    security = sections.get("security") if isinstance(sections, Mapping) else None
    if not isinstance(security, Mapping):
        return SecurityPolicy()
    pci = _section(security, "pci_compliance")
    access = _section(security, "access_control")
    roles = access.get("allowed_roles")
    return SecurityPolicy(
        encrypt=crypto.template_encrypts(template),
        pci=pci.get("enabled") is True,
        retention_seconds=parse_duration(pci.get("data_retention"))
        if pci.get("enabled") is True and pci.get("data_retention") is not None
        else None,
        authentication_required=access.get("authentication_required") is True,
        allowed_roles=frozenset(str(r) for r in roles)
        if isinstance(roles, list | tuple) and roles
        else None,
        sensitive_fields=template_fields(template),
    )


_cache: dict[tuple[int, str], SecurityPolicy] = {}
_lock = threading.Lock()


def policies() -> dict[int, SecurityPolicy]:
    """``NamedTask`` id -> policy for every stored revision (one query when cached)."""
    from ..models import NamedTask

    rows = list(NamedTask.objects.order_by().values_list("pk", "content_hash"))
    missing = [pk for pk, digest in rows if (pk, digest) not in _cache]
    if missing:
        loaded = NamedTask.objects.filter(pk__in=missing).values_list(
            "pk", "content_hash", "template"
        )
        with _lock:
            if len(_cache) > 10_000:
                _cache.clear()
            for pk, digest, template in loaded:
                _cache[(pk, digest)] = build_security_policy(template)
    empty = SecurityPolicy()
    return {pk: _cache.get((pk, digest), empty) for pk, digest in rows}


def policy_of(named_task: Any) -> SecurityPolicy:
    """The policy of one ``NamedTask`` instance (its template is at hand)."""
    key = (named_task.pk, named_task.content_hash)
    policy = _cache.get(key)
    if policy is None:
        policy = build_security_policy(named_task.template)
        with _lock:
            _cache[key] = policy
    return policy
