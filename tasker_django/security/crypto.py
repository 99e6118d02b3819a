"""Encryption at rest of task contexts and step results (``security.encryption``).

Values are encrypted with AES-256-GCM (``cryptography``'s ``AESGCM``): authenticated
encryption, so a wrong key or a changed byte is an error, never garbage. Keys come
from ``TASKER["ENCRYPTION_KEYS"]``, newest first; the newest encrypts, every listed
key decrypts, so keys rotate by prepending a new one and running
``manage.py tasker_reencrypt``.

A stored value is a JSON object (the column stays ``jsonb``/JSON)::

    {"$tasker_encrypted": "v1", "kid": "3f2a9c1e0b7d4a66", "data": "<base64>"}

``kid`` names the key (the first 16 hex digits of the SHA-256 of the key, or the
``id`` given in settings); ``data`` is the 12-byte nonce followed by the ciphertext
and tag. The associated data binds a value to its column (``context``, ``results``,
``inputs``): a context cannot be passed off as a result.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured

MARKER = "$tasker_encrypted"
VERSION = "v1"
ALGORITHM = "AES-256-GCM"
#: ``security.encryption.algorithm`` values that mean what we do.
SUPPORTED_ALGORITHMS = frozenset({"aes-256", "aes-256-gcm", "aes256", "aes256-gcm", "aes-gcm"})
_NONCE = 12
_ENVELOPE_KEYS = frozenset({MARKER, "kid", "data"})


class EncryptionError(Exception):
    """A value cannot be encrypted or decrypted (no key, unknown key, tampered data)."""


class EncryptionNotConfigured(EncryptionError, ImproperlyConfigured):
    """A template asks for encryption but ``TASKER["ENCRYPTION_KEYS"]`` is empty."""


@dataclass(frozen=True)
class Key:
    kid: str
    secret: bytes
    created: date | None


def _parse_key(entry: Any, index: int) -> Key:
    raw: Any = entry
    kid = None
    created = None
    if isinstance(entry, Mapping):
        raw = entry.get("key")
        kid = entry.get("id")
        created_value = entry.get("created")
        if created_value:
            try:
                created = (
                    created_value
                    if isinstance(created_value, date)
                    else datetime.fromisoformat(str(created_value)).date()
                )
            except ValueError:
                raise ImproperlyConfigured(
                    f"TASKER['ENCRYPTION_KEYS'][{index}]: 'created' must be an ISO date "
                    f"(YYYY-MM-DD), got {created_value!r}"
                ) from None
    if not isinstance(raw, str | bytes):
        raise ImproperlyConfigured(
            f"TASKER['ENCRYPTION_KEYS'][{index}] must be a base64 string of 32 bytes "
            "or a dict with 'key' (and optional 'id', 'created')"
        )
    try:
        secret = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        secret = b""
    if len(secret) != 32:
        # Never echo the value: it is a secret.
        raise ImproperlyConfigured(
            f"TASKER['ENCRYPTION_KEYS'][{index}] is not the base64 of 32 bytes "
            '(make one with: python -c "import base64, os; '
            'print(base64.b64encode(os.urandom(32)).decode())")'
        )
    if kid is None:
        kid = hashlib.sha256(secret).hexdigest()[:16]
    return Key(kid=str(kid), secret=secret, created=created)


_keys_lock = threading.Lock()
#: (the configured list itself, its parsed keys): holding the list keeps its id unique.
_keys_cache: tuple[Any, tuple[Key, ...]] | None = None


def keys() -> tuple[Key, ...]:
    """The configured keys, newest first (parsed once per settings object)."""
    global _keys_cache
    from ..conf import tasker_settings

    configured = tasker_settings.ENCRYPTION_KEYS or ()
    cached = _keys_cache
    if cached is not None and cached[0] is configured:
        return cached[1]
    if isinstance(configured, str | bytes) or not isinstance(configured, list | tuple):
        raise ImproperlyConfigured("TASKER['ENCRYPTION_KEYS'] must be a list (newest key first)")
    parsed = tuple(_parse_key(entry, i) for i, entry in enumerate(configured))
    kids = [k.kid for k in parsed]
    if len(set(kids)) != len(kids):
        raise ImproperlyConfigured("TASKER['ENCRYPTION_KEYS'] lists the same key id twice")
    with _keys_lock:
        _keys_cache = (configured, parsed)
    return parsed


def newest_key() -> Key:
    configured = keys()
    if not configured:
        raise EncryptionNotConfigured(
            "encryption is enabled by the template but TASKER['ENCRYPTION_KEYS'] is empty; "
            "refusing to store the data in plain text"
        )
    return configured[0]


def is_envelope(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get(MARKER) == VERSION
        and value.keys() == _ENVELOPE_KEYS
        and isinstance(value.get("data"), str)
    )


def _aad(purpose: str) -> bytes:
    return f"tasker_django:{VERSION}:{purpose}".encode()


def encrypt(value: Any, purpose: str, key: Key | None = None) -> dict[str, str]:
    """The envelope holding ``value`` (any JSON) encrypted with ``key`` (default: newest)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key = key or newest_key()
    plain = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(key.secret).encrypt(nonce, plain.encode(), _aad(purpose))
    return {
        MARKER: VERSION,
        "kid": key.kid,
        "data": base64.b64encode(nonce + sealed).decode("ascii"),
    }


def decrypt(envelope: Mapping[str, Any], purpose: str) -> Any:
    """The value in ``envelope``; EncryptionError if its key is missing or it was altered."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    kid = str(envelope.get("kid"))
    by_id = {k.kid: k for k in keys()}
    key = by_id.get(kid)
    if key is None:
        known = ", ".join(by_id) or "none configured"
        raise EncryptionError(
            f"cannot decrypt the {purpose}: it was encrypted with key {kid!r}, which is not in "
            f"TASKER['ENCRYPTION_KEYS'] (configured key ids: {known})"
        )
    try:
        blob = base64.b64decode(str(envelope.get("data")), validate=True)
        plain = AESGCM(key.secret).decrypt(blob[:_NONCE], blob[_NONCE:], _aad(purpose))
    except (InvalidTag, binascii.Error, ValueError):
        raise EncryptionError(
            f"cannot decrypt the {purpose} with key {kid!r}: authentication failed "
            "(the key's bytes are wrong or the stored value was altered)"
        ) from None
    return json.loads(plain)


def reveal(value: Any, purpose: str) -> Any:
    """``value`` decrypted if it is an envelope, else unchanged."""
    return decrypt(value, purpose) if is_envelope(value) else value


# ---------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------


def encryption_section(template: Mapping[str, Any] | None) -> Mapping[str, Any]:
    sections = (template or {}).get("sections") or {}
    security = sections.get("security") if isinstance(sections, Mapping) else None
    encryption = security.get("encryption") if isinstance(security, Mapping) else None
    return encryption if isinstance(encryption, Mapping) else {}


def template_encrypts(template: Mapping[str, Any] | None) -> bool:
    return encryption_section(template).get("enabled") is True


def seal_for_template(template: Mapping[str, Any] | None, value: Any, purpose: str) -> Any:
    """``value`` encrypted when the template enables encryption (None stays None)."""
    if value is None or not template_encrypts(template):
        return value
    return encrypt(value, purpose)


# ---------------------------------------------------------------------------
# Engine hooks (runner.py / pg.py): cheap when nothing is encrypted
# ---------------------------------------------------------------------------

ENCRYPTED = "encrypted"
DECRYPT_ERROR = "decrypt_error"


def open_loaded(loaded: Any) -> None:
    """Decrypt a loaded step's task context, inputs and parents' results in place.

    Called only when the context is an envelope (the task's template encrypts). A
    failure is kept in ``loaded.step`` and raised by :func:`check_opened` inside the
    handler run, so the step fails permanently with a clear message.
    """
    task, step = loaded.task, loaded.step
    task[ENCRYPTED] = True
    try:
        task["context"] = reveal(task["context"], "context") or {}
        step["inputs"] = reveal(step["inputs"], "inputs") or {}
        for parent in loaded.parents:
            parent["results"] = reveal(parent["results"], "results")
            parent["inputs"] = reveal(parent["inputs"], "inputs") or {}
    except (EncryptionError, ImproperlyConfigured) as exc:
        task["context"] = {}
        step[DECRYPT_ERROR] = str(exc)


def check_opened(loaded: Any) -> None:
    message = loaded.step.get(DECRYPT_ERROR)
    if message:
        from ..handlers.errors import PermanentError

        raise PermanentError(message, error_code="DECRYPTION_FAILED", error_category="security")


def sealed_results(loaded: Any, results: Any) -> Any:
    """The results to store: encrypted when the task's data is (same key as new data)."""
    if results is None or not loaded.task.get(ENCRYPTED):
        return results
    return encrypt(results, "results")


def check_encryption_ready(template: Mapping[str, Any] | None) -> None:
    """Raise EncryptionNotConfigured when the template encrypts and no key is configured."""
    if template_encrypts(template):
        newest_key()


def seal_context(template: Mapping[str, Any] | None, context: dict[str, Any]) -> dict[str, Any]:
    """The context to insert: a :class:`~.fields.Sealed` dict (encrypted by the field on
    write, plain on the returned instance) when the template encrypts."""
    if not template_encrypts(template):
        return context
    from .fields import Sealed

    return Sealed(context)
