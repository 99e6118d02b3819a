"""``JSONField`` that decrypts envelopes on read and keeps them encrypted on write.

Used for ``Task.context`` and ``WorkflowStep.inputs`` / ``results``. Reads through the
ORM (admin, API, commands, ``refresh_from_db``, ``values()``) see plain values. A
value read from an encrypted column comes back as a :class:`Sealed` dict, which is
encrypted again (with the newest key) when it is saved or used in ``update()``, so
copying a value never writes it in plain text. New values are encrypted by the
services and the engine, which know the template (``crypto.seal_for_template``).

The field deconstructs as ``django.db.models.JSONField``: the column and the
migrations are exactly those of a plain JSON field.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from . import crypto


class Sealed(dict[str, Any]):
    """A decrypted value that must be encrypted again when written back."""


class EncryptedJSONField(models.JSONField):
    def deconstruct(self) -> Any:
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.JSONField", args, kwargs

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        value = super().from_db_value(value, expression, connection)
        if isinstance(value, dict) and crypto.MARKER in value and crypto.is_envelope(value):
            plain = crypto.decrypt(value, self.name)
            return Sealed(plain) if isinstance(plain, dict) else plain
        return value

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if isinstance(value, Sealed):
            return crypto.encrypt(dict(value), self.name)
        return value
