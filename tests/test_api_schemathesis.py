"""Property-based run of schemathesis against the generated OpenAPI schema.

Every operation is called with generated valid and invalid requests, authenticated as a
superuser, against objects that exist; no response may be a 5xx or break the schema
(status code, content type, headers, body). Bounded and derandomized so CI stays fast.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tasker_django import create_task
from tests.api_support import basic, failed_task, finished_task, make_user
from tests.conftest import EXAMPLE_TEMPLATES

pytest_plugins = ["tests.api_fixtures"]

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_fast_hasher")]

#: Examples per operation and generation mode (about 0.1 s each); raise it for a deeper
#: run, e.g. ``API_FUZZ_EXAMPLES=200 pytest tests/test_api_schemathesis.py``.
MAX_EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "6"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def keep_test_connection() -> Iterator[None]:
    """Like Django's test client: requests must not close the test's DB connection."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.mark.usefixtures("keep_test_connection")
def test_no_5xx_and_every_response_matches_the_schema(
    api_templates: Any, load_template: Any, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["localhost"]  # schemathesis' WSGI client
    load_template((EXAMPLE_TEMPLATES / "payments/linear_payment/1.0.0.yaml").read_text())
    finished_task()
    failed_task()
    create_task("api_secret", namespace="secret")
    make_user("fuzzer", is_superuser=True)
    auth = {"Authorization": basic("fuzzer")}
    app = get_wsgi_application()
    schema = schemathesis.openapi.from_wsgi("/tasker/schema/?format=json", app, headers=auth)
    failures: list[str] = []
    started = time.monotonic()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis_settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                # Each case in a savepoint rolled back after it: cases stay independent,
                # and on PostgreSQL one failed statement cannot abort all later cases.
                savepoint = transaction.savepoint()
                try:
                    response = case.call(headers=auth)
                finally:
                    transaction.savepoint_rollback(savepoint)
                case.validate_response(response, checks=CHECKS, headers=auth)

            try:
                run()
            except Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE  # nothing to break: no parameters
            except (Exception, BaseExceptionGroup) as exc:  # report every operation's failure
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:3000])
    assert operations == 31
    assert not failures, "\n\n".join(failures)
    if MAX_EXAMPLES <= 6:
        assert time.monotonic() - started < 60
