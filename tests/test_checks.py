"""System checks of tasker_django: E001-E003 and W001-W004 (see ``tasker_django/checks.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.checks import Error, Warning, run_checks
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from tasker_django.checks import check_loaded_handlers, check_settings
from tasker_django.handlers.base import StepHandler
from tasker_django.handlers.registry import registry
from tasker_django.models import NamedStep
from tasker_django.testing import NamedStepFactory, NamedTaskFactory, load_test_template

#: The test settings' TASKER, used as the base of every override.
BASE: dict[str, Any] = {
    "LEASE_SECONDS": 3,
    "REKICK_AFTER_SECONDS": 3,
    "SWEEP_INTERVAL": 0.2,
    "DEFAULT_STEP_TIMEOUT": 60,
}
#: django-q2 settings that leave room for BASE's step timeout (60 + 10 s eager budget).
GOOD_Q = {"name": "checks", "orm": "default", "timeout": 120, "retry": 180}


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


def tasker_messages(messages: list[Any]) -> list[Any]:
    return [m for m in messages if (m.id or "").startswith("tasker_django.")]


def settings_check(tasker: Any, q_cluster: dict[str, Any] | None = None) -> list[Any]:
    with override_settings(TASKER=tasker, Q_CLUSTER=q_cluster or GOOD_Q):
        return check_settings()


# -- clean configuration -------------------------------------------------------------------


@pytest.mark.django_db
def test_clean_configuration_has_no_tasker_messages() -> None:
    messages = run_checks(databases=["default"])
    assert tasker_messages(messages) == []


@pytest.mark.django_db
def test_full_valid_configuration_has_no_messages(tmp_path: Path) -> None:
    tasker = {
        **BASE,
        "DEFAULT_MAX_ATTEMPTS": 5,
        "DEFAULT_BACKOFF": {"strategy": "linear", "initial_delay": 2, "jitter": False},
        "EAGER_MAX_STEPS": 10,
        "EAGER_MAX_SECONDS": 5.0,
        "TEMPLATE_DIRS": [tmp_path, str(tmp_path)],
        "HANDLERS": [{"name": "echo_again", "class": "tests.testapp.tasker_handlers.EchoParents"}],
        "DEFAULT_STEP_TIMEOUT": None,
    }
    with override_settings(TASKER=tasker, Q_CLUSTER=GOOD_Q):
        messages = run_checks(tags=["tasker_django"], databases=["default"])
    assert messages == []


def test_tasker_none_is_accepted() -> None:
    assert settings_check(None) == []


def test_checks_are_registered_under_the_tasker_django_tag() -> None:
    from django.core.checks import registry as check_registry

    registered = check_registry.registry.get_checks()
    tagged = {c.__name__ for c in registered if "tasker_django" in getattr(c, "tags", ())}
    assert {"check_settings", "check_loaded_handlers"} <= tagged


# -- E001 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [["LEASE_SECONDS", 3], "LEASE_SECONDS=3", 42])
def test_e001_tasker_not_a_dict(value: Any) -> None:
    messages = settings_check(value)
    assert ids(messages) == ["tasker_django.E001"]
    assert isinstance(messages[0], Error)
    assert "TASKER must be a dict" in messages[0].msg
    assert messages[0].hint


@pytest.mark.django_db
def test_e001_through_run_checks() -> None:
    with override_settings(TASKER=[("LEASE_SECONDS", 3)]):
        messages = tasker_messages(run_checks(databases=["default"]))
    assert ids(messages) == ["tasker_django.E001"]


# -- E002 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DEFAULT_MAX_ATTEMPTS", 0),
        ("DEFAULT_MAX_ATTEMPTS", -3),
        ("DEFAULT_MAX_ATTEMPTS", "3"),
        ("LEASE_SECONDS", 0),
        ("LEASE_SECONDS", True),
        ("REKICK_AFTER_SECONDS", -1.5),
        ("SWEEP_INTERVAL", "fast"),
        ("SWEEP_INTERVAL", None),
        ("EAGER_MAX_STEPS", 0),
        ("EAGER_MAX_STEPS", [5]),
        ("EAGER_MAX_SECONDS", -1),
        ("DEFAULT_STEP_TIMEOUT", 0),
        ("DEFAULT_STEP_TIMEOUT", -10),
        ("DEFAULT_STEP_TIMEOUT", False),
        ("DEFAULT_BACKOFF", 5),
        ("DEFAULT_BACKOFF", ["initial_delay", 1]),
        ("DEFAULT_BACKOFF", {"initial": 1}),
        ("TEMPLATE_DIRS", "/srv/templates"),
        ("TEMPLATE_DIRS", 7),
        ("PG_SYNCHRONOUS_COMMIT", "false"),
        ("PG_SYNCHRONOUS_COMMIT", 0),
        ("PG_PREPARED_STATEMENTS", "off"),
        ("EAGER_CONTINUATION", None),
    ],
)
def test_e002_bad_values(key: str, value: Any) -> None:
    messages = settings_check({**BASE, key: value})
    assert ids(messages) == ["tasker_django.E002"], messages
    assert key in messages[0].msg
    assert isinstance(messages[0], Error)
    assert messages[0].hint


@pytest.mark.parametrize(
    ("key", "value"),
    [
        # Non-numbers of these keys are also used in the W004 arithmetic: the checks must
        # report them, not crash with ValueError/TypeError.
        ("DEFAULT_STEP_TIMEOUT", "abc"),
        ("EAGER_MAX_SECONDS", "soon"),
        ("EAGER_MAX_SECONDS", None),
        # A template dir that is not a path must be reported, not raise TypeError.
        ("TEMPLATE_DIRS", [None]),
    ],
)
def test_e002_bad_values_do_not_crash_the_checks(key: str, value: Any) -> None:
    messages = settings_check({**BASE, key: value})
    assert "tasker_django.E002" in ids(messages)
    assert any(key in m.msg for m in messages if m.id == "tasker_django.E002")


@pytest.mark.parametrize(
    ("key", "value"), [("DEFAULT_MAX_ATTEMPTS", 0.5), ("EAGER_MAX_STEPS", 2.5)]
)
def test_e002_counts_must_be_integers(key: str, value: Any) -> None:
    # create_task stores int(DEFAULT_MAX_ATTEMPTS) as max_attempts: 0.5 -> 0 violates the
    # tasker_step_counts constraint (max_attempts >= 1) on every task. A count must be an int.
    messages = settings_check({**BASE, key: value})
    assert ids(messages) == ["tasker_django.E002"], messages


def test_e002_several_problems_are_all_reported() -> None:
    messages = settings_check({**BASE, "LEASE_SECONDS": 0, "SWEEP_INTERVAL": -1})
    assert ids(messages) == ["tasker_django.E002", "tasker_django.E002"]
    assert "LEASE_SECONDS" in messages[0].msg and "SWEEP_INTERVAL" in messages[1].msg


def test_e002_valid_values_pass() -> None:
    tasker = {
        **BASE,
        "DEFAULT_MAX_ATTEMPTS": 1,
        "LEASE_SECONDS": 0.5,
        "DEFAULT_STEP_TIMEOUT": None,
        "DEFAULT_BACKOFF": {"strategy": "fixed", "initial_delay": 1, "max_delay": 2},
        "TEMPLATE_DIRS": (),
        "EAGER_CONTINUATION": True,
        "PG_SYNCHRONOUS_COMMIT": False,
    }
    assert settings_check(tasker) == []


# -- E003 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"class": "tests.testapp.tasker_handlers.DoesNotExist"}, "cannot import"),
        ({"name": "x"}, "'class' is required"),
        ({"class": "collections.OrderedDict"}, "is not a StepHandler subclass"),
        ({"class": "tests.testapp.tasker_handlers.Noop", "colour": "red"}, "unknown keys"),
        ({"class": "tests.testapp.tasker_handlers.Noop", "config": [1]}, "'config' must be"),
        ({"class": "tests.testapp.tasker_handlers.Noop", "version": 1.1}, "'version' must be"),
        ("tests.testapp.tasker_handlers.Noop", "must be a mapping"),
    ],
)
def test_e003_bad_handler_entry(entry: Any, fragment: str) -> None:
    messages = settings_check({**BASE, "HANDLERS": [entry]})
    assert ids(messages) == ["tasker_django.E003"], messages
    assert "TASKER['HANDLERS'][0]" in messages[0].msg
    assert fragment in messages[0].msg
    assert "'class'" in messages[0].hint


def test_e003_handlers_not_a_list() -> None:
    messages = settings_check({**BASE, "HANDLERS": {"class": "x.Y"}})
    assert ids(messages) == ["tasker_django.E003"]
    assert "must be a list" in messages[0].msg


def test_e003_name_conflict_with_a_registered_handler() -> None:
    before = len(registry)
    entry = {"name": "test.noop", "class": "tests.testapp.tasker_handlers.EchoParents"}
    messages = settings_check({**BASE, "HANDLERS": [entry]})
    assert ids(messages) == ["tasker_django.E003"]
    assert "already registered" in messages[0].msg
    assert len(registry) == before  # the check registers nothing


def test_e003_bad_handlers_file(tmp_path: Path) -> None:
    path = tmp_path / "handlers.yaml"
    path.write_text("handlers:\n  - {name: x, class: nowhere.Nothing}\n")
    messages = settings_check({**BASE, "HANDLERS_FILE": str(path)})
    assert ids(messages) == ["tasker_django.E003"]
    assert "handlers[0]" in messages[0].msg and "nowhere.Nothing" in messages[0].msg
    missing = settings_check({**BASE, "HANDLERS_FILE": str(tmp_path / "missing.yaml")})
    assert ids(missing) == ["tasker_django.E003"]
    assert "cannot be read" in missing[0].msg


# -- W001 ------------------------------------------------------------------------------------


def test_w001_unknown_key_with_did_you_mean_hint() -> None:
    messages = settings_check({**BASE, "LEASE_SECOND": 10})
    assert ids(messages) == ["tasker_django.W001"]
    assert isinstance(messages[0], Warning)
    assert "'LEASE_SECOND'" in messages[0].msg
    assert messages[0].hint == "Did you mean 'LEASE_SECONDS'?"


def test_w001_unknown_key_without_a_close_match() -> None:
    messages = settings_check({**BASE, "ZZZ": 1})
    assert ids(messages) == ["tasker_django.W001"]
    assert messages[0].hint == "Remove it."


def test_w001_one_warning_per_unknown_key() -> None:
    messages = settings_check({**BASE, "TEMPLATE_DIR": [], "HANDLER": []})
    assert ids(messages) == ["tasker_django.W001", "tasker_django.W001"]
    hints = sorted(m.hint for m in messages)
    assert hints == ["Did you mean 'HANDLERS'?", "Did you mean 'TEMPLATE_DIRS'?"]


# -- W002 ------------------------------------------------------------------------------------


def test_w002_missing_template_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    a_file = tmp_path / "file.yaml"
    a_file.write_text("x: 1\n")
    messages = settings_check({**BASE, "TEMPLATE_DIRS": [tmp_path, missing, a_file]})
    assert ids(messages) == ["tasker_django.W002", "tasker_django.W002"]
    assert str(missing) in messages[0].msg
    assert str(a_file) in messages[1].msg


# -- W003 ------------------------------------------------------------------------------------

EPHEMERAL = """
name: ephemeral
version: "1.0.0"
step_templates:
  - {name: first, handler_class: test.noop}
  - {name: gone, handler_class: test.w003_ephemeral, depends_on_step: first}
"""


@pytest.mark.django_db
def test_w003_loaded_template_whose_handler_disappeared() -> None:
    with registry.isolated():

        class Ephemeral(StepHandler, name="test.w003_ephemeral"):
            def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
                return {}

        load_test_template(EPHEMERAL)
        assert check_loaded_handlers(databases=["default"]) == []
    messages = check_loaded_handlers(databases=["default"])
    assert ids(messages) == ["tasker_django.W003"]
    message = messages[0]
    assert isinstance(message, Warning)
    assert "default/ephemeral@1.0.0" in message.msg
    assert "'gone'" in message.msg and "'test.w003_ephemeral'" in message.msg
    assert "Register the handler" in message.hint
    # The same warning through the check framework.
    assert ids(tasker_messages(run_checks(databases=["default"]))) == ["tasker_django.W003"]


@pytest.mark.django_db
def test_w003_bogus_handler_class_stored_by_factories() -> None:
    step = NamedStepFactory.create(name="pay", handler_class="payments.nowhere.Charge")
    NamedStepFactory.create(named_task=step.named_task, name="fine", handler_class="test.echo")
    messages = check_loaded_handlers(databases=["default"])
    assert ids(messages) == ["tasker_django.W003"]
    assert "'pay'" in messages[0].msg and "payments.nowhere.Charge" in messages[0].msg


@pytest.mark.django_db
def test_w003_only_current_revisions_are_checked() -> None:
    old = NamedTaskFactory.create(name="old", is_current=False)
    NamedStepFactory.create(named_task=old, handler_class="gone.Handler")
    assert check_loaded_handlers(databases=["default"]) == []


@pytest.mark.django_db
def test_w003_check_uses_no_database_when_not_asked_to() -> None:
    # Django's contract for checks: "If databases is None, the check must not use any
    # database connections" (`manage.py check` passes None unless --database is given).
    NamedStepFactory.create(handler_class="gone.Handler")
    with CaptureQueriesContext(connection) as ctx:
        messages = check_loaded_handlers(app_configs=None, databases=None)
    assert len(ctx.captured_queries) == 0
    assert messages == []
    assert ids(check_loaded_handlers(databases=["default"])) == ["tasker_django.W003"]


@pytest.mark.django_db
def test_database_checks_cost_two_queries_whatever_the_template_count() -> None:
    for i in range(5):
        NamedStepFactory.create(name=f"s{i}", handler_class=f"gone.Handler{i}")
    with CaptureQueriesContext(connection) as ctx:
        messages = check_loaded_handlers(databases=["default"])
    assert len(messages) == 5
    assert len(ctx.captured_queries) == 2  # steps' handlers (W003), templates' actions (W005)
    assert NamedStep.objects.count() == 5


# -- W004 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [30, 70])
def test_w004_q_cluster_timeout_too_small(timeout: int) -> None:
    # 60 s step timeout + 10 s eager budget: the django-q2 timeout must be above 70 s.
    messages = settings_check(BASE, {**GOOD_Q, "timeout": timeout, "retry": 600})
    assert ids(messages) == ["tasker_django.W004"]
    assert "Q_CLUSTER['timeout']" in messages[0].msg and "70 s" in messages[0].msg
    assert "DEFAULT_STEP_TIMEOUT" in messages[0].hint


def test_w004_timeout_just_above_the_budget_is_fine() -> None:
    assert settings_check(BASE, {**GOOD_Q, "timeout": 71, "retry": 600}) == []


def test_w004_budget_follows_eager_max_seconds() -> None:
    tasker = {**BASE, "EAGER_MAX_SECONDS": 100}
    messages = settings_check(tasker, {**GOOD_Q, "timeout": 120, "retry": 600})
    assert ids(messages) == ["tasker_django.W004"]
    assert "160 s" in messages[0].msg


@pytest.mark.parametrize("retry", [100, 120])
def test_w004_retry_not_above_timeout(retry: int) -> None:
    messages = settings_check(BASE, {**GOOD_Q, "timeout": 120, "retry": retry})
    assert ids(messages) == ["tasker_django.W004"]
    assert "Q_CLUSTER['retry']" in messages[0].msg
    assert "timeout plus a margin" in messages[0].hint


def test_w004_both_problems() -> None:
    messages = settings_check(BASE, {**GOOD_Q, "timeout": 10, "retry": 5})
    assert ids(messages) == ["tasker_django.W004", "tasker_django.W004"]


def test_w004_no_timeout_no_warning() -> None:
    assert settings_check(BASE, {"name": "q", "orm": "default"}) == []
