"""System checks of the ``security`` section (ids E010, W010, W011).

| id   | what |
|------|------|
| E010 | a current template enables encryption but ``TASKER["ENCRYPTION_KEYS"]`` is empty, or a key is not the base64 of 32 bytes |
| W010 | ``key_rotation_interval``: the newest key is older than the interval, or its age is unknown (no ``created``) |
| W011 | a security key with no effect or an unsupported value (``algorithm``, ``authorization_method``, ``authentication_required: false``, ``audit_level``, a bad ``data_retention``) |
"""  # noqa: E501

from __future__ import annotations

from datetime import date
from typing import Any

from django.core.checks import Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from . import crypto
from .policy import parse_duration


def _label(template: dict[str, Any]) -> str:
    return f"{template.get('namespace')}/{template.get('name')}@{template.get('version')}"


def _security(template: dict[str, Any]) -> dict[str, Any]:
    sections = template.get("sections") or {}
    security = sections.get("security") if isinstance(sections, dict) else None
    return security if isinstance(security, dict) else {}


def _sub(security: dict[str, Any], name: str) -> dict[str, Any]:
    value = security.get(name)
    return value if isinstance(value, dict) else {}


def _w011(label: str, key: str, message: str, hint: str) -> Warning:
    return Warning(
        f"Template {label}: security.{key} {message}", hint=hint, id="tasker_django.W011"
    )


def template_messages(template: dict[str, Any], today: date | None = None) -> list[Any]:
    """E010/W010/W011 for one template (pure but for the configured keys)."""
    label = _label(template)
    security = _security(template)
    messages: list[Any] = []
    encryption = _sub(security, "encryption")
    if encryption.get("enabled") is True:
        try:
            keys = crypto.keys()
        except ImproperlyConfigured:
            keys = ()  # reported by check_encryption_keys
        if not keys:
            messages.append(
                Error(
                    f"Template {label} enables security.encryption but "
                    "TASKER['ENCRYPTION_KEYS'] is empty: creating its tasks is refused.",
                    hint='Add a key: base64 of 32 random bytes, e.g. python -c "import base64, '
                    'os; print(base64.b64encode(os.urandom(32)).decode())"',
                    id="tasker_django.E010",
                )
            )
        algorithm = encryption.get("algorithm")
        if algorithm is not None and str(algorithm).lower() not in crypto.SUPPORTED_ALGORITHMS:
            messages.append(
                _w011(
                    label,
                    "encryption.algorithm",
                    f"is {algorithm!r}; tasker-django encrypts with AES-256-GCM only.",
                    "Use 'AES-256' or 'AES-256-GCM', or remove the key.",
                )
            )
        interval = encryption.get("key_rotation_interval")
        if interval is not None:
            messages.extend(_rotation(label, interval, keys, today or date.today()))
    pci = _sub(security, "pci_compliance")
    if "audit_level" in pci:
        messages.append(
            _w011(
                label,
                "pci_compliance.audit_level",
                f"({pci['audit_level']!r}) has no effect: the audit trail is "
                "security.audit_logging.",
                "Remove it, or configure security.audit_logging.",
            )
        )
    retention = pci.get("data_retention")
    if retention is not None and parse_duration(retention) is None:
        messages.append(
            _w011(
                label,
                "pci_compliance.data_retention",
                f"({retention!r}) is not a duration like '90d', '12h' or '1y': nothing is pruned.",
                "Write a number and a unit: s, m, h, d, w or y.",
            )
        )
    access = _sub(security, "access_control")
    if access.get("authentication_required") is False:
        messages.append(
            _w011(
                label,
                "access_control.authentication_required",
                "is false, which has no effect: the admin and the API always require a "
                "logged-in user.",
                "Remove it or set it to true.",
            )
        )
    method = access.get("authorization_method")
    if method is not None and str(method).lower() != "rbac":
        messages.append(
            _w011(
                label,
                "access_control.authorization_method",
                f"is {method!r}; only 'rbac' (allowed_roles as Django groups) is supported, "
                "so allowed_roles applies as RBAC.",
                "Use 'rbac' or remove the key.",
            )
        )
    roles = access.get("allowed_roles")
    if roles is not None and not (
        isinstance(roles, list) and all(isinstance(r, str) for r in roles)
    ):
        messages.append(
            _w011(
                label,
                "access_control.allowed_roles",
                "must be a list of Django group names; it is ignored (no restriction).",
                "Write allowed_roles: [group_a, group_b].",
            )
        )
    return messages


def _rotation(label: str, interval: Any, keys: Any, today: date) -> list[Any]:
    seconds = parse_duration(interval)
    hint = (
        "Rotation is not automatic: put a new key first in TASKER['ENCRYPTION_KEYS'] as "
        "{'key': ..., 'created': 'YYYY-MM-DD'} and run manage.py tasker_reencrypt."
    )
    if seconds is None:
        return [
            Warning(
                f"Template {label}: security.encryption.key_rotation_interval {interval!r} is "
                "not a duration like '30d'.",
                hint=hint,
                id="tasker_django.W010",
            )
        ]
    if not keys:
        return []
    newest = keys[0]
    if newest.created is None:
        return [
            Warning(
                f"Template {label}: security.encryption.key_rotation_interval is {interval!r} "
                f"but the age of the newest key ({newest.kid}) is unknown, so it cannot be "
                "checked.",
                hint=hint,
                id="tasker_django.W010",
            )
        ]
    age_days = (today - newest.created).days
    if age_days * 86400 > seconds:
        return [
            Warning(
                f"Template {label}: the newest encryption key ({newest.kid}) is {age_days} days "
                f"old, past security.encryption.key_rotation_interval {interval!r}.",
                hint=hint,
                id="tasker_django.W010",
            )
        ]
    return []


@register("tasker_django")
def check_encryption_keys(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """E010: ``TASKER['ENCRYPTION_KEYS']`` entries that are not usable keys."""
    try:
        crypto.keys()
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc),
                hint="Each key is the base64 of 32 random bytes.",
                id="tasker_django.E010",
            )
        ]
    return []


@register("tasker_django", Tags.database)
def check_security_sections(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[Any]:
    from ..checks import current_templates

    messages: list[Any] = []
    for template in current_templates(databases):
        messages.extend(template_messages(template))
    return messages
