"""Fixtures of the API tests, loaded by them as a plugin (``pytest_plugins``).

Prefixed ``api_`` to stay clear of other fixtures (pytest-django has an ``admin_client``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.api_support import (
    FAILING,
    OPERATOR,
    PAYMENT,
    PAYMENT_V2,
    SECRET,
    client_for,
    make_user,
)


@pytest.fixture
def api_fast_hasher(settings: Any) -> None:
    """Basic auth checks the password on every request: use a cheap hasher in tests."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def api_templates(load_template: Callable[..., Any], api_fast_hasher: None) -> dict[str, Any]:
    return {
        "payment": load_template(PAYMENT),
        "payment_v2": load_template(PAYMENT_V2),
        "failing": load_template(FAILING),
        "secret": load_template(SECRET),
    }


@pytest.fixture
def api_admin(db: Any, api_fast_hasher: None) -> APIClient:
    return client_for(make_user("root", is_superuser=True, is_staff=True))


@pytest.fixture
def api_operator(db: Any, api_fast_hasher: None) -> APIClient:
    return client_for(make_user("operator", OPERATOR))


@pytest.fixture
def api_anon() -> APIClient:
    return APIClient()
