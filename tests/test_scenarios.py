"""Templates' ``testing`` section: tasker_test_scenarios, mocks, W012, the pytest integration."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import override_settings

from example_project.payments.mocks import MockAnalytics, MockEmail, MockStripe
from tasker_django.conf import DEFAULTS, tasker_settings
from tasker_django.handlers.base import StepHandler
from tasker_django.handlers.errors import PermanentError
from tasker_django.handlers.services import ServiceNotConfigured
from tasker_django.models import StepAttempt, Task, TaskEvent, WorkflowStep
from tasker_django.testing import load_test_template, run_task_to_completion
from tasker_django.testing.scenarios import (
    context_from_test_data,
    find_scenario,
    run_scenario,
    scenario_cases,
    scenarios_of,
)

from .conftest import ROOT, SEED_DIR

pytestmark = pytest.mark.django_db

SEED = SEED_DIR / "payment_workflow.yaml"


#: The seed's payment_workflow enables encryption at rest: give the tests a key.
TEST_KEY = base64.b64encode(bytes(range(7, 39))).decode()


def needs_key() -> bool:
    return "ENCRYPTION_KEYS" in DEFAULTS and not tasker_settings.user_settings.get(
        "ENCRYPTION_KEYS"
    )


@pytest.fixture(autouse=True)
def _encryption_key() -> Any:
    if not needs_key():
        yield
        return
    with override_settings(TASKER={**tasker_settings.user_settings, "ENCRYPTION_KEYS": [TEST_KEY]}):
        yield


def load_seed() -> Any:
    return load_test_template(SEED.read_text())


def scenarios(*args: str, **options: Any) -> str:
    out = io.StringIO()
    call_command("tasker_test_scenarios", *args, stdout=out, **options)
    return out.getvalue()


def rows(output: str) -> dict[str, list[str]]:
    """Scenario name -> [template, result, detail] of the table."""
    found = {}
    for line in output.splitlines():
        parts = re.split(r"\s{2,}", line.strip(), maxsplit=3)
        if len(parts) == 4 and parts[2] in ("PASS", "FAIL"):
            found[parts[0]] = parts[1:]
    return found


def tiny(scenario_yaml: str, *, testing_extra: str = "", name: str = "tiny") -> str:
    """A two-step template (test handlers) with the given test_scenarios entries."""
    return f"""
name: {name}
namespace: scn
version: "1.0.0"
step_templates:
  - name: first
    handler_class: test.flaky
    handler_config: {{fail_times: 0}}
    retry_backoff: {{initial_delay: 5, max_delay: 5}}
  - name: second
    handler_class: test.noop
    depends_on_step: first
testing:
{textwrap.indent(testing_extra, "  ")}
  test_scenarios:
{textwrap.indent(scenario_yaml, "    ")}
"""


# -- the seed's payment_workflow with the example project's handlers and mocks -------------------


def test_the_seed_payment_workflow_scenarios_pass() -> None:
    load_seed()
    output = scenarios("default/payment_workflow")
    table = rows(output)
    assert set(table) == {"successful_payment", "payment_failure", "timeout_recovery"}
    assert {r[1] for r in table.values()} == {"PASS"}, output
    assert table["successful_payment"][2] == "task complete; 3 step(s) complete"
    assert (
        "payment_processing raised CardDeclinedError on attempt 1" in (table["payment_failure"][2])
    )
    assert (
        "payment_processing timed out on attempt 1, complete on attempt 2"
        in (table["timeout_recovery"][2])
    )
    assert "3 scenario(s): 3 passed, 0 failed" in output
    # Nothing persists: every scenario was rolled back.
    assert not Task.objects.exists()
    assert not WorkflowStep.objects.exists() and not StepAttempt.objects.exists()


def test_the_mocks_replace_the_services_and_act_on_the_scenario() -> None:
    named = load_seed()
    ok = run_scenario(named, find_scenario(named, "successful_payment"))
    assert ok.passed, ok.describe()
    gateway, email, analytics = (
        ok.mocks["payment_gateway"],
        ok.mocks["notification_service"],
        ok.mocks["analytics_service"],
    )
    assert isinstance(gateway, MockStripe) and isinstance(email, MockEmail)
    assert isinstance(analytics, MockAnalytics)
    assert gateway.scenario.name == "successful_payment"
    # test_data: the first amount, currency and method.
    assert gateway.charges == [
        {
            "amount": 1.0,
            "currency": "USD",
            "payment_method": "card",
            "idempotency_key": ok.steps["payment_processing"]["results"]["payment_id"],
        }
    ]
    assert ok.steps["payment_processing"]["results"]["gateway"] == "mock_stripe"
    assert ok.steps["payment_processing"]["results"]["charge_id"].startswith("ch_mock_")
    assert email.sent[0]["template"] == "payment_confirmation"
    assert ok.steps["send_confirmation"]["results"]["provider"] == "mock_email"
    assert analytics.tracked[0]["payment_id"] == gateway.charges[0]["idempotency_key"]
    assert ok.task_status == "complete"

    declined = run_scenario(named, find_scenario(named, "payment_failure"))
    assert declined.passed, declined.describe()
    assert declined.task_status == "error"
    # Permanent (the template lists CardDeclinedError): one attempt, no retry.
    assert [(a["step"], a["attempt"], a["outcome"]) for a in declined.attempts] == [
        ("payment_processing", 1, "permanent_error")
    ]
    assert declined.attempts[0]["error_class"].endswith("services.CardDeclinedError")
    assert declined.attempts[0]["error_code"] == "CARD_DECLINED"

    timeout = run_scenario(named, find_scenario(named, "timeout_recovery"))
    assert timeout.passed, timeout.describe()
    assert [
        (a["attempt"], a["outcome"]) for a in timeout.attempts if a["step"] == "payment_processing"
    ] == [(1, "timeout"), (2, "success")]
    assert "injected by test scenario 'timeout_recovery'" in timeout.attempts[0]["message"]
    assert timeout.mocks["payment_gateway"].charges  # attempt 2 reached the gateway
    assert not Task.objects.exists()


def test_seed_mocks_are_registered_and_no_w012_for_the_seed() -> None:
    load_seed()
    warnings = [m for m in run_checks(databases=["default"]) if m.id == "tasker_django.W012"]
    assert warnings == []


# -- failures, refusals and the table ---------------------------------------------------------


def test_a_failing_scenario_is_reported_as_fail_with_a_non_zero_exit() -> None:
    load_test_template(
        tiny(
            """
- name: all_good
  steps: [first, second]
- name: wants_a_decline
  expected_error: CardDeclinedError
- name: wants_a_retry
  retry_expected: true
"""
        )
    )
    out = io.StringIO()
    with pytest.raises(CommandError, match=r"2 of 3 scenario\(s\) failed"):
        call_command("tasker_test_scenarios", "scn/tiny", stdout=out)
    table = rows(out.getvalue())
    assert table["all_good"][1] == "PASS"
    assert table["wants_a_decline"][1:] == [
        "FAIL",
        "expected CardDeclinedError, but the task ended complete; "
        "no attempt raised CardDeclinedError (no attempt failed)",
    ]
    assert table["wants_a_retry"][1:] == ["FAIL", "expected a retry, but no step was retried"]
    assert "3 scenario(s): 1 passed, 2 failed" in out.getvalue()
    assert not Task.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_manage_py_exits_non_zero_when_a_scenario_fails(tmp_path: Path) -> None:
    """The real command line against the test database: exit status 1, the reason on stderr."""
    from .conftest import Workers

    template = tmp_path / "tiny.yaml"
    template.write_text(tiny("- name: wants_a_decline\n  expected_error: CardDeclinedError"))
    env = Workers(tmp_path).env()

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args, "--settings=tests.settings"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    loaded = manage("tasker_load_templates", str(template))
    assert loaded.returncode == 0, loaded.stderr
    proc = manage("tasker_test_scenarios", "scn/tiny")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL" in proc.stdout and "no attempt raised CardDeclinedError" in proc.stdout
    assert "CommandError: 1 of 1 scenario(s) failed" in proc.stderr
    assert not Task.objects.exists()  # committed rows would be visible here: none


@pytest.mark.django_db(transaction=True)
def test_rollback_leaves_no_rows_even_with_real_commits() -> None:
    """With transaction=True nothing else rolls back: the command's own rollback is tested."""
    load_seed()
    before = (Task.objects.count(), TaskEvent.objects.count())
    output = scenarios()
    assert "3 passed, 0 failed" in output
    assert (Task.objects.count(), TaskEvent.objects.count()) == before == (0, 0)
    assert not WorkflowStep.objects.exists() and not StepAttempt.objects.exists()


def test_existing_tasks_are_untouched() -> None:
    from tasker_django import create_task

    named = load_seed()
    task = create_task(named.name, context={"payment_amount": 5, "currency": "EUR"})
    run_task_to_completion(task)
    task.refresh_from_db()
    steps = list(task.steps.values_list("pk", "status", "attempts"))
    scenarios("payment_workflow", verbosity=0)
    assert list(Task.objects.values_list("pk", flat=True)) == [task.pk]
    assert list(task.steps.values_list("pk", "status", "attempts")) == steps


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        (["scn/nope"], {}, "No loaded template scn/nope."),
        (["default/payment_workflow@9.9.9"], {}, "No loaded template default/payment_workflow@9"),
        (["a/b/c"], {}, "is not NAMESPACE/NAME"),
        ([], {"scenario": ["nope"]}, "Unknown scenario(s): nope. Known: payment_failure, "),
        (["default/payment_workflow"], {"scenario": ["successful_payment", "zz"]}, ": zz."),
        (["scn/plain"], {}, "declares no testing.test_scenarios"),
    ],
)
def test_unknown_templates_and_scenarios_are_refused(
    args: list[str], options: dict[str, Any], message: str
) -> None:
    load_seed()
    load_test_template(
        "name: plain\nnamespace: scn\nversion: '1.0.0'\n"
        "step_templates: [{name: a, handler_class: test.noop}]\n"
    )
    with pytest.raises(CommandError) as caught:
        scenarios(*args, **options)
    assert message in str(caught.value)
    assert not Task.objects.exists()


def test_a_name_in_two_namespaces_needs_its_namespace() -> None:
    load_test_template(tiny("- name: ok", name="twice"))
    load_test_template(tiny("- name: ok", name="twice").replace("namespace: scn", "namespace: b"))
    with pytest.raises(CommandError, match="several namespaces"):
        scenarios("twice")
    assert rows(scenarios("b/twice"))["ok"][:2] == ["b/twice@1.0.0", "PASS"]


def test_no_templates_with_scenarios() -> None:
    assert scenarios() == "No loaded template declares testing.test_scenarios.\n"


def test_scenario_filter_and_verbosity() -> None:
    load_seed()
    output = scenarios(scenario=["payment_failure"], verbosity=2)
    assert list(rows(output)) == ["payment_failure"]
    # verbosity 2: each scenario's steps with status and attempts, and the last error.
    assert re.search(r"payment_processing\s+error\s+1 attempt\(s\)\s+\S*CardDeclinedError", output)
    assert re.search(r"payment_verification\s+pending\s+0 attempt", output)
    assert scenarios(verbosity=0) == ""  # all pass: nothing printed


# -- the expectations -----------------------------------------------------------------------


def run_tiny(entry: str, *, template: str | None = None, **tiny_options: Any) -> Any:
    named = load_test_template(template or tiny(entry, **tiny_options))
    [scenario] = scenarios_of(named.template)
    return run_scenario(named, scenario)


def test_expected_error_matches_base_class_names_and_error_codes() -> None:
    template = tiny("- name: x").replace(
        "handler_class: test.noop", "handler_class: test.permanent"
    )
    named = load_test_template(template)
    for expected, passes in [
        ("PermanentError", True),  # a base class of the raised error
        ("tasker_django.handlers.errors.PermanentError", True),
        ("StepError", True),
        ("card_declined", True),  # the error code, case-insensitive
        ("CardDeclinedError", False),
    ]:
        entry = {"name": "x", "expected_error": expected}
        named.template["sections"]["testing"]["test_scenarios"] = [entry]
        [scenario] = scenarios_of(named.template)
        result = run_scenario(named, scenario)
        assert result.passed is passes, (expected, result.detail)
    assert "(raised: PermanentError)" in result.detail


def test_timeout_step_needs_a_retry_that_succeeds() -> None:
    ok = run_tiny("- name: t\n  timeout_step: first\n  retry_expected: true")
    assert ok.passed, ok.detail
    assert ok.steps["first"]["attempts"] == 2
    template = tiny("- name: t\n  timeout_step: first").replace(
        "handler_config: {fail_times: 0}",
        "handler_config: {fail_times: 0}\n    default_retry_limit: 1",
    )
    no_retry = run_tiny("", template=template)
    assert not no_retry.passed
    assert "first timed out on attempt 1 and no retry succeeded (ended error after 1" in (
        no_retry.detail
    )
    assert "the task ended error" in no_retry.detail


def test_retry_expected_false_and_true() -> None:
    flaky = tiny("- name: r\n  retry_expected: false").replace("fail_times: 0", "fail_times: 1")
    result = run_tiny("", template=flaky)
    assert not result.passed
    assert result.detail == "expected no retry, but first retried"
    result = run_tiny("", template=flaky.replace("retry_expected: false", "retry_expected: true"))
    assert result.passed and result.detail == "task complete; retried: first"


def test_steps_not_reached_fail() -> None:
    template = tiny("- name: s\n  steps: [first, second]\n  expected_error: PermanentError")
    template = template.replace("handler_class: test.noop", "handler_class: test.permanent")
    result = run_tiny("", template=template)
    assert not result.passed
    assert result.detail == "step second ended error, expected complete"


def test_business_rule_refusal_is_an_error_only_when_expected() -> None:
    rules = (
        "constraints:\n  business_rules:\n"
        "    - {name: min, rule: 'payment_amount >= 1', error_message: 'too small'}\n"
    )
    refused = run_tiny("", template=tiny("- name: r\n  context: {payment_amount: 0}") + rules)
    assert not refused.passed and refused.task_status == "refused"
    assert "refused at creation" in refused.detail and "too small" in refused.detail
    expected = run_tiny(
        "",
        template=tiny(
            "- name: r\n  context: {payment_amount: 0}\n  expected_error: TaskValidationError"
        )
        + rules,
    )
    assert expected.passed, expected.detail
    assert expected.detail.startswith("refused at creation as expected")


def test_invalid_entries_and_unknown_mocks_fail_before_running() -> None:
    result = run_tiny("- name: bad\n  steps: [first, nope]\n  retry_expected: maybe")
    assert not result.passed
    assert "testing.test_scenarios[0].steps: the template has no step 'nope'" in result.detail
    assert "retry_expected must be true or false" in result.detail
    result = run_tiny("- name: m", testing_extra="mock_services: {payment_gateway: mock_nope}")
    assert not result.passed
    assert result.detail == (
        "testing.mock_services.payment_gateway: mock 'mock_nope' is not in TASKER['MOCK_SERVICES']"
    )
    assert not Task.objects.exists()


# -- test_data ------------------------------------------------------------------------------


def test_context_from_test_data() -> None:
    data = {
        "enabled": True,
        "test_payment_amounts": [1, 10],
        "test_currencies": ["USD"],
        "test_payment_methods": ["card"],
        "test_boxes": ["b1"],
        "test_addresses": ["a1"],
        "test_status": "new",  # not a list: as is
        "test_empties": [],
        "region": "eu",
    }
    assert context_from_test_data(data) == {
        "payment_amount": 1,
        "currency": "USD",
        "payment_method": "card",
        "box": "b1",
        "address": "a1",
        "status": "new",
        "region": "eu",
    }
    assert context_from_test_data({**data, "enabled": False}) == {}
    assert context_from_test_data(None) == {}


def test_scenario_context_overrides_test_data_and_disabled_test_data() -> None:
    testing = "test_data:\n  enabled: true\n  test_amounts: [3, 4]\n  test_regions: [eu]"
    named = load_test_template(
        tiny("- name: a\n  context: {amount: 9}\n- name: b", testing_extra=testing)
    )
    a, b = scenarios_of(named.template)
    assert a.context == {"amount": 9, "region": "eu"}
    assert b.context == {"amount": 3, "region": "eu"}
    named = load_test_template(
        tiny(
            "- name: a\n  context: {amount: 9}\n- name: b",
            testing_extra=testing.replace("enabled: true", "enabled: false"),
        )
    )
    a, b = scenarios_of(named.template)
    assert (a.context, b.context) == ({"amount": 9}, {})


# -- services -------------------------------------------------------------------------------


class Thing:
    created = 0

    def __init__(self) -> None:
        Thing.created += 1


def test_service_lookup_outside_scenarios(tasker_registry: Any) -> None:
    class UsesServices(StepHandler, register=False):
        def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
            return {}

    handler = UsesServices()
    with pytest.raises(ServiceNotConfigured) as caught:
        handler.service("payment_gateway")
    assert isinstance(caught.value, PermanentError)
    assert caught.value.error_code == "SERVICE_NOT_CONFIGURED"
    assert "TASKER['SERVICES']" in str(caught.value)
    assert isinstance(handler.service("payment_gateway", default=Thing), Thing)
    with override_settings(
        TASKER={**tasker_settings.user_settings, "SERVICES": {"gw": f"{__name__}.Thing"}}
    ):
        handler = UsesServices()
        before = Thing.created
        first = handler.service("gw", default=dict)
        assert isinstance(first, Thing)  # the setting wins over the default
        assert handler.service("gw") is first  # once per handler instance
        assert Thing.created == before + 1
        assert UsesServices().service("gw") is not first
    with (
        override_settings(
            TASKER={**tasker_settings.user_settings, "SERVICES": {"gw": "no.such.Module"}}
        ),
        pytest.raises(ServiceNotConfigured, match="does not import"),
    ):
        UsesServices().service("gw")


# -- W012 -----------------------------------------------------------------------------------


def test_w012_names_template_service_and_mock() -> None:
    load_test_template(
        tiny(
            "- name: a\n  steps: [first, ghost]\n  timeout_step: phantom\n  expect: 1",
            testing_extra="mock_services: {payment_gateway: mock_stripe, mailer: mock_pigeon}",
        )
    )
    messages = [m.msg for m in run_checks(databases=["default"]) if m.id == "tasker_django.W012"]
    assert messages == [
        "Template scn/tiny@1.0.0: testing.mock_services.mailer: mock 'mock_pigeon' is not in "
        "TASKER['MOCK_SERVICES'].",
        "Template scn/tiny@1.0.0: testing.test_scenarios[0].steps: the template has no step "
        "'ghost'.",
        "Template scn/tiny@1.0.0: testing.test_scenarios[0].timeout_step: the template has no "
        "step 'phantom'.",
        "Template scn/tiny@1.0.0: testing.test_scenarios[0].expect: unknown key, it has no effect.",
    ]
    with override_settings(
        TASKER={**tasker_settings.user_settings, "MOCK_SERVICES": {"mock_pigeon": "no.Such"}}
    ):
        messages = [
            m.msg for m in run_checks(databases=["default"]) if m.id == "tasker_django.W012"
        ]
    # (jsonb keeps mapping keys in its own order: compare without order)
    mock_messages = sorted(m for m in messages if "mock_services" in m)
    assert len(mock_messages) == 2
    assert (
        "mock 'mock_pigeon' (TASKER['MOCK_SERVICES']['mock_pigeon']) does not import"
        in (mock_messages[0])
    )
    assert "mock 'mock_stripe' is not in TASKER['MOCK_SERVICES']" in mock_messages[1]


def test_w012_is_silent_without_a_database_and_for_templates_without_testing() -> None:
    load_test_template(
        "name: plain\nnamespace: scn\nversion: '1.0.0'\n"
        "step_templates: [{name: a, handler_class: test.noop}]\n"
    )
    load_test_template(tiny("- name: a", testing_extra="mock_services: {x: mock_nope}"))
    assert not [m for m in run_checks() if m.id == "tasker_django.W012"]  # no database given
    assert [m.id for m in run_checks(databases=["default"]) if m.id == "tasker_django.W012"] == [
        "tasker_django.W012"
    ]


# -- pytest integration ---------------------------------------------------------------------


def test_scenario_cases_from_files_directories_and_template_dirs(tmp_path: Path) -> None:
    cases = scenario_cases(SEED)
    assert [c.id for c in cases] == [
        "default/payment_workflow@1.0.0:successful_payment",
        "default/payment_workflow@1.0.0:payment_failure",
        "default/payment_workflow@1.0.0:timeout_recovery",
    ]
    assert len(scenario_cases(SEED_DIR)) == 3  # the other seeds declare no scenarios
    folder = tmp_path / "default" / "payment_workflow"
    folder.mkdir(parents=True)
    shutil.copy(SEED, folder / "1.0.0.yaml")
    with override_settings(TASKER={**tasker_settings.user_settings, "TEMPLATE_DIRS": [tmp_path]}):
        assert scenario_cases("default/payment_workflow@1.0.0") == cases[:0] + [
            c.__class__(str(folder / "1.0.0.yaml"), c.template, c.scenario, c.environment)
            for c in cases
        ]
        with pytest.raises(ValueError, match="neither a template file"):
            scenario_cases("default/payment_workflow@2.0.0")
    empty = tmp_path / "plain.yaml"
    empty.write_text("name: p\nversion: '1'\nstep_templates: [{name: a, handler_class: x}]\n")
    with pytest.raises(ValueError, match="declares testing.test_scenarios"):
        scenario_cases(empty)


def test_run_tasker_scenario_fixture(run_tasker_scenario: Any) -> None:
    named = load_seed()
    result = run_tasker_scenario(named, "payment_failure")
    assert result.passed and result.task_status == "error"
    named.template["sections"]["testing"]["test_scenarios"][1]["expected_error"] = "Nope"
    failing = run_tasker_scenario(named, "payment_failure", check=False)
    assert not failing.passed
    with pytest.raises(pytest.fail.Exception, match="FAIL default/payment_workflow@1.0.0"):
        run_tasker_scenario(named, "payment_failure")


def docs_example() -> str:
    text = (ROOT / "docs" / "testing.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    [example] = [b for b in blocks if b.startswith("# tests/test_workflow_scenarios.py")]
    return example


FAILING_TEST = """
from pathlib import Path

import pytest

from tasker_django.testing import scenario_params

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("case", scenario_params(HERE / "failing.yaml"))
def test_failing(case, run_tasker_scenario):
    run_tasker_scenario(case)
"""


@pytest.mark.slow
def test_the_documented_pytest_example_runs_in_a_pytest_session(tmp_path: Path) -> None:
    """The docs' example, run by pytest in a subprocess, plus one failing scenario."""
    project = tmp_path / "project"
    (project / "task_templates").mkdir(parents=True)
    shutil.copy(SEED, project / "task_templates" / "payment_workflow.yaml")
    (project / "tests").mkdir()
    (project / "tests" / "test_workflow_scenarios.py").write_text(docs_example())
    (project / "tests" / "failing.yaml").write_text(
        tiny("- name: wants_a_decline\n  expected_error: CardDeclinedError")
    )
    (project / "tests" / "test_failing_scenario.py").write_text(FAILING_TEST)
    keys = (
        "TASKER = {**TASKER, 'ENCRYPTION_KEYS': "
        f"TASKER.get('ENCRYPTION_KEYS') or [{TEST_KEY!r}]}}\n"
        if "ENCRYPTION_KEYS" in DEFAULTS
        else ""
    )
    (project / "scn_settings.py").write_text(f"from tests.settings import *  # noqa\n{keys}")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "scn_settings",
        "PYTHONPATH": os.pathsep.join([str(project), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    if connection.vendor == "postgresql":
        env["TASKER_TEST_DB_NAME"] = f"{connection.settings_dict['NAME']}_sub"
    else:
        env.pop("DATABASE_URL", None)
        env["TASKER_TEST_SQLITE"] = str(tmp_path / "sub.sqlite3")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "error", "-rf", "tests"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "1 failed, 3 passed" in output, output
    assert (
        "FAILED tests/test_failing_scenario.py::test_failing[scn/tiny@1.0.0:wants_a_decline]"
        in output
    )
    assert "FAIL scn/tiny@1.0.0 wants_a_decline: expected CardDeclinedError" in output
