"""``tasker_django.conf.tasker_settings``: defaults, overrides, unknown names."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from tasker_django.conf import DEFAULTS, TaskerSettings, tasker_settings


def test_defaults_for_keys_the_settings_do_not_set() -> None:
    configured = django_settings.TASKER
    for key, default in DEFAULTS.items():
        if key not in configured:
            assert getattr(tasker_settings, key) == default, key


def test_values_from_settings_win_over_defaults() -> None:
    for key, value in django_settings.TASKER.items():
        assert getattr(tasker_settings, key) == value, key
    assert tasker_settings.DEFAULT_STEP_TIMEOUT == 60 != DEFAULTS["DEFAULT_STEP_TIMEOUT"]


def test_every_default_with_an_empty_tasker_dict() -> None:
    with override_settings(TASKER={}):
        for key, default in DEFAULTS.items():
            assert getattr(tasker_settings, key) == default, key
        assert tasker_settings.DEFAULT_BACKOFF["initial_delay"] == 1.0


def test_defaults_without_a_tasker_setting(settings: Any) -> None:
    del settings.TASKER
    assert not hasattr(django_settings, "TASKER")
    assert tasker_settings.DEFAULT_MAX_ATTEMPTS == 3
    assert tasker_settings.LEASE_SECONDS == DEFAULTS["LEASE_SECONDS"] == 60
    assert tasker_settings.HANDLER_MODULE == "tasker_handlers"


def test_tasker_none_means_defaults(settings: Any) -> None:
    settings.TASKER = None
    assert DEFAULTS["SWEEP_INTERVAL"] == tasker_settings.SWEEP_INTERVAL


def test_override_settings_changes_a_value_and_it_reverts() -> None:
    configured_lease = django_settings.TASKER["LEASE_SECONDS"]
    assert tasker_settings.DEFAULT_MAX_ATTEMPTS == 3  # read (and cached) before
    assert configured_lease == tasker_settings.LEASE_SECONDS
    with override_settings(TASKER={"DEFAULT_MAX_ATTEMPTS": 7, "LEASE_SECONDS": 99}):
        assert tasker_settings.DEFAULT_MAX_ATTEMPTS == 7
        assert tasker_settings.LEASE_SECONDS == 99
        # keys the override leaves out fall back to the defaults, not the outer settings
        assert DEFAULTS["DEFAULT_STEP_TIMEOUT"] == tasker_settings.DEFAULT_STEP_TIMEOUT
    assert tasker_settings.DEFAULT_MAX_ATTEMPTS == 3
    assert configured_lease == tasker_settings.LEASE_SECONDS
    assert tasker_settings.DEFAULT_STEP_TIMEOUT == 60


def test_override_as_decorator() -> None:
    @override_settings(TASKER={"ENVIRONMENT": "staging"})
    def inner() -> Any:
        return tasker_settings.ENVIRONMENT

    assert inner() == "staging"
    assert tasker_settings.ENVIRONMENT is None


def test_pytest_django_settings_fixture_changes_a_value(settings: Any) -> None:
    assert tasker_settings.EAGER_MAX_STEPS == 50
    settings.TASKER = {**settings.TASKER, "EAGER_MAX_STEPS": 5}
    assert tasker_settings.EAGER_MAX_STEPS == 5
    assert tasker_settings.SWEEP_INTERVAL == 0.2


def test_other_settings_do_not_drop_the_cache() -> None:
    assert tasker_settings.REKICK_AFTER_SECONDS == 3
    with override_settings(DEBUG=True):
        assert tasker_settings.REKICK_AFTER_SECONDS == 3


def test_nested_overrides() -> None:
    with override_settings(TASKER={"EAGER_MAX_SECONDS": 1.0}):
        with override_settings(TASKER={"EAGER_MAX_SECONDS": 2.0}):
            assert tasker_settings.EAGER_MAX_SECONDS == 2.0
        assert tasker_settings.EAGER_MAX_SECONDS == 1.0
    assert DEFAULTS["EAGER_MAX_SECONDS"] == tasker_settings.EAGER_MAX_SECONDS


@pytest.mark.parametrize("name", ["NOT_A_SETTING", "lease_seconds", "_private", "__wrapped__"])
def test_unknown_attribute_raises_attribute_error(name: str) -> None:
    with pytest.raises(AttributeError, match="Invalid TASKER setting"):
        getattr(tasker_settings, name)
    assert not hasattr(tasker_settings, name)


def test_unknown_key_in_settings_is_not_exposed() -> None:
    with override_settings(TASKER={"TYPO_KEY": 1}), pytest.raises(AttributeError):
        _ = tasker_settings.TYPO_KEY


def test_reading_does_not_change_the_defaults() -> None:
    before = copy.deepcopy(DEFAULTS)
    with override_settings(TASKER={"DEFAULT_BACKOFF": {"initial_delay": 9}}):
        assert tasker_settings.DEFAULT_BACKOFF == {"initial_delay": 9}
    assert before == DEFAULTS


def test_separate_instance_with_its_own_defaults() -> None:
    own = TaskerSettings({"ONLY": 1})
    assert own.ONLY == 1
    with pytest.raises(AttributeError):
        _ = own.LEASE_SECONDS
    own.reload()
    assert own.ONLY == 1


def test_import_strings_are_imported_on_access(monkeypatch: pytest.MonkeyPatch) -> None:
    import os.path

    from tasker_django import conf

    monkeypatch.setattr(conf, "IMPORT_STRINGS", frozenset({"ENVIRONMENT"}))
    with override_settings(TASKER={"ENVIRONMENT": "os.path.join"}):
        assert tasker_settings.ENVIRONMENT is os.path.join
    with override_settings(TASKER={"ENVIRONMENT": None}):
        assert tasker_settings.ENVIRONMENT is None  # only strings are imported
    with (
        override_settings(TASKER={"ENVIRONMENT": "no_such_module.thing"}),
        pytest.raises(ImportError),
    ):
        _ = tasker_settings.ENVIRONMENT
