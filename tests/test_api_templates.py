"""API: namespaces, templates with their versions and step graphs, registered handlers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api_support import assert_error, url

pytest_plugins = ["tests.api_fixtures"]

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("api_fast_hasher")]


def test_namespaces(api_templates: Any, api_admin: Any) -> None:
    data = api_admin.get(url("namespaces/")).json()
    assert [(n["name"], n["template_count"]) for n in data["results"]] == [
        ("api", 2),
        ("secret", 1),
    ]
    assert data["count"] == 2


def test_templates_with_their_versions(api_templates: Any, api_admin: Any) -> None:
    data = api_admin.get(url("templates/")).json()
    rows = {(t["namespace"], t["name"]): t for t in data["results"]}
    assert list(rows) == [("api", "api_failing"), ("api", "api_payment"), ("secret", "api_secret")]
    payment = rows[("api", "api_payment")]
    assert payment["latest_version"] == "1.2.0"
    assert payment["description"] == "Pay, notify, audit (v2)"
    assert [(v["version"], v["step_count"]) for v in payment["versions"]] == [
        ("1.2.0", 3),
        ("1.0.0", 3),
    ]
    only = api_admin.get(url("templates/?namespace=secret")).json()["results"]
    assert [t["name"] for t in only] == ["api_secret"]
    named = api_admin.get(url("templates/?name=api_payment&page_size=1")).json()
    assert named["count"] == 1 and named["results"][0]["name"] == "api_payment"


def test_one_template(api_templates: Any, api_admin: Any) -> None:
    data = api_admin.get(url("templates/api/api_payment/")).json()
    assert [v["version"] for v in data["versions"]] == ["1.2.0", "1.0.0"]
    assert_error(api_admin.get(url("templates/api/nope/")), 404)
    assert_error(api_admin.get(url("templates/api/api_payment%00/")), 404)


def test_template_version_detail(api_templates: Any, api_admin: Any) -> None:
    data = api_admin.get(url("templates/api/api_payment/1.0.0/")).json()
    assert (data["namespace"], data["name"], data["version"], data["revision"]) == (
        "api",
        "api_payment",
        "1.0.0",
        1,
    )
    assert data["context_schema"]["required"] == ["amount"]
    pay, notify, audit = data["steps"]
    assert (pay["name"], pay["handler_class"], pay["depends_on"]) == ("pay", "test.echo", [])
    assert pay["handler_config_keys"] == ["api_key"]
    assert "secret-value" not in str(data)  # config values are never shown
    assert notify["depends_on"] == ["pay"] and audit["depends_on"] == ["pay"]
    assert data["graph"]["levels"] == [["pay"], ["notify", "audit"]]
    assert data["graph"]["edges"] == [
        {"parent": "pay", "child": "notify"},
        {"parent": "pay", "child": "audit"},
    ]
    assert_error(api_admin.get(url("templates/api/api_payment/7.0.0/")), 404)


def test_handlers_with_metadata(api_templates: Any, api_admin: Any) -> None:
    data = api_admin.get(url("handlers/?page_size=500")).json()
    by_name = {h["handler_name"]: h for h in data["results"]}
    echo = by_name["test.echo"]
    assert echo["handler_class"] == "tests.testapp.tasker_handlers.EchoParents"
    assert echo["description"] == "Returns the context value ``value`` plus every parent's results."
    assert "process" in echo["capabilities"] and echo["registered"] is True
    assert data["count"] == len(data["results"]) >= 8
    none = api_admin.get(url("handlers/?namespace=no-such-namespace")).json()
    assert none["count"] == 0
    paged = api_admin.get(url("handlers/?page_size=2")).json()
    assert len(paged["results"]) == 2 and paged["next"]
