"""Every key of the seed templates does something or is reported (W013, W014), and is documented."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from django.core.checks import run_checks
from django.test import override_settings

from tasker_django.definitions.keys import KNOWN, NO_EFFECT, inert_keys, key_paths

from .conftest import ROOT, SEED_DIR

SEEDS = sorted(SEED_DIR.glob("*.yaml"))
DOCS = (ROOT / "docs" / "templates.md").read_text()


def _documented() -> set[str]:
    section = DOCS[DOCS.index("## Every key") :]
    return set(re.findall(r"^\| `([^`]+)`", section, flags=re.M))


def test_the_seeds_are_there() -> None:
    assert len(SEEDS) == 3


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.name)
def test_every_seed_key_is_known_or_reported_as_inert(path: Any) -> None:
    raw = yaml.safe_load(path.read_text())
    for key, reason in inert_keys(raw):
        assert key in NO_EFFECT, f"{path.name}: {key} {reason}"


@pytest.mark.parametrize("path", SEEDS, ids=lambda p: p.name)
def test_every_seed_key_is_in_the_docs_table(path: Any) -> None:
    documented = _documented()
    raw = yaml.safe_load(path.read_text())
    missing = sorted(
        {re.sub(r"^steps\[\]", "step_templates[]", k) for k in key_paths(raw)} - documented
    )
    assert not missing


def test_the_docs_table_lists_only_keys_the_code_knows() -> None:
    known = KNOWN | set(NO_EFFECT)
    assert _documented() - known == set()


def _warnings(ids: tuple[str, ...]) -> list[Any]:
    return [m for m in run_checks(databases=["default"]) if m.id in ids]


MISSPELT = {
    "name": "misspelt",
    "version": "1.0.0",
    "step_templates": [{"name": "s", "handler_class": "test.noop", "timeout_secs": 5}],
    "workflow_config": {"execution_mod": "sequential"},
    "constraints": {"technical_constraints": [{"name": "x", "value": 1, "memory_limit": "1G"}]},
}


@pytest.mark.django_db
def test_w013_names_unknown_and_inert_keys(load_template: Any) -> None:
    load_template(yaml.safe_dump(MISSPELT))
    messages = {m.msg for m in _warnings(("tasker_django.W013",))}
    text = "\n".join(sorted(messages))
    assert "'step_templates[].timeout_secs' is not a template key" in text
    assert "'workflow_config.execution_mod' is not a template key" in text
    assert "'constraints.technical_constraints[].memory_limit' has no effect" in text
    assert len(messages) == 3


@pytest.mark.django_db
def test_w013_is_quiet_for_known_keys(load_template: Any) -> None:
    load_template(
        yaml.safe_dump(
            {
                "name": "tidy",
                "version": "1.0.0",
                "task_config": {"priority": "high", "tags": ["a"]},
                "workflow_config": {"execution_mode": "parallel"},
                "step_templates": [
                    {"name": "s", "handler_class": "test.noop", "handler_config": {"any": 1}}
                ],
            }
        )
    )
    assert _warnings(("tasker_django.W013",)) == []


CACHING = {
    "name": "cached",
    "version": "1.0.0",
    "step_templates": [{"name": "s", "handler_class": "test.noop"}],
    "performance": {
        "caching": {"enabled": True, "cache_type": "redis", "ttl": 3600},
        "database_pool": {"min_connections": 5, "max_connections": 20},
    },
}


@pytest.mark.django_db
@override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
def test_w014_reports_what_the_settings_do_not_give(load_template: Any) -> None:
    load_template(yaml.safe_dump(CACHING))
    text = "\n".join(m.msg for m in _warnings(("tasker_django.W014",)))
    assert "cache_type is 'redis' but CACHES['default'] uses" in text
    assert "ttl is 3600 but CACHES['default']['TIMEOUT'] is 300" in text
    assert "database_pool" in text


@pytest.mark.django_db
def test_w014_is_quiet_when_the_settings_match(load_template: Any, settings: Any) -> None:
    from tasker_django.definitions.keys import deployment_gaps

    template = {"sections": CACHING["performance"] and {"performance": CACHING["performance"]}}
    databases = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "OPTIONS": {"pool": {"min_size": 5, "max_size": 20}},
        }
    }
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "TIMEOUT": 3600}
    }
    assert deployment_gaps(template, databases, caches) == []
    databases["default"]["OPTIONS"]["pool"]["max_size"] = 10
    assert deployment_gaps(template, databases, caches) == [
        "performance.database_pool.max_connections is 20 but the pool's max_size is 10"
    ]
