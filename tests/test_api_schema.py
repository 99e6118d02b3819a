"""OpenAPI: the schema generates without a warning, validates, covers every endpoint, and
is served (with the docs page) to authenticated users."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.urls import URLPattern, URLResolver

from tasker_django.api import urls as api_urls
from tasker_django.api.enums import ENUM_NAME_OVERRIDES
from tasker_django.api.schema import _clear_enum_cache
from tests.api_support import url

pytest_plugins = ["tests.api_fixtures"]

#: What docs/api.md tells a host with its own drf-spectacular schema to set.
HOST_SETTINGS = {"ENUM_NAME_OVERRIDES": ENUM_NAME_OVERRIDES}


def generate(tmp_path: Path, *options: str) -> dict[str, Any]:
    out = tmp_path / "schema.json"
    _clear_enum_cache()
    try:
        # --fail-on-warn: any drf-spectacular warning or error fails the test.
        call_command(
            "spectacular",
            "--fail-on-warn",
            "--validate",
            "--format",
            "openapi-json",
            "--file",
            str(out),
            *options,
        )
    finally:
        _clear_enum_cache()
    return dict(json.loads(out.read_text()))


def test_schema_generates_without_warnings(tmp_path: Path) -> None:
    schema = generate(
        tmp_path,
        "--generator-class",
        "tasker_django.api.schema.TaskerSchemaGenerator",
        "--custom-settings",
        "tasker_django.api.schema.SCHEMA_SETTINGS",
    )
    assert schema["info"]["title"] == "tasker-django API"
    assert all(path.startswith("/tasker/") for path in schema["paths"])
    routes = [
        p.pattern
        for p in api_urls.urlpatterns
        if isinstance(p, URLPattern | URLResolver) and p.name not in ("schema", "docs")
    ]
    assert len(schema["paths"]) == len(routes) == 30
    operations = [op for ops in schema["paths"].values() for op in ops.values()]
    assert len(operations) == 31
    assert len({op["operationId"] for op in operations}) == 31
    assert set(schema["paths"]["/tasker/audit/"]) == {"get"}
    components = schema["components"]["schemas"]
    assert {"TaskStatusEnum", "StepStatusEnum", "Error", "TaskCreate"} <= set(components)
    assert set(schema["components"]["securitySchemes"]) == {"basicAuth", "cookieAuth"}
    live = schema["paths"]["/tasker/health/live/"]["get"]
    assert set(live["responses"]) == {"200"} and {} in live["security"]
    create = schema["paths"]["/tasker/tasks/"]["post"]
    assert {"201", "200", "400", "401", "403", "413", "415"} == set(create["responses"])


def test_whole_site_schema_of_a_host_has_no_warnings(tmp_path: Path) -> None:
    """A host generating one schema for the site (default generator) with the documented
    ENUM_NAME_OVERRIDES gets tasker's endpoints without warnings."""
    schema = generate(tmp_path, "--custom-settings", "tests.test_api_schema.HOST_SETTINGS")
    assert "/tasker/tasks/" in schema["paths"]


@pytest.mark.django_db
def test_schema_and_docs_are_served(api_admin: Any, api_anon: Any) -> None:
    assert api_anon.get(url("schema/")).status_code == 401
    assert api_anon.get(url("docs/")).status_code == 401
    response = api_admin.get(url("schema/?format=json"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    assert json.loads(response.content)["openapi"].startswith("3.")
    yaml = api_admin.get(url("schema/"))
    assert yaml.content.startswith(b"openapi: 3.")
    docs = api_admin.get(url("docs/"))
    assert docs.status_code == 200 and b"swagger-ui" in docs.content
    assert b'"/tasker/schema/"' in docs.content
