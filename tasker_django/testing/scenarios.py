"""Templates' ``testing`` section: test scenarios run inline with mock services.

A template declares::

    testing:
      test_data: {enabled: true, test_payment_amounts: [1, 10], test_currencies: [USD]}
      mock_services: {payment_gateway: mock_stripe}
      test_scenarios:
        - name: successful_payment
          steps: [payment_processing, payment_verification]
        - name: payment_failure
          expected_error: CardDeclinedError
        - name: timeout_recovery
          timeout_step: payment_processing
          retry_expected: true

:func:`run_scenario` creates a task of the template with the scenario's context,
runs it with :func:`~tasker_django.testing.inline.run_task_to_completion` (fake
clock, no broker) while handlers get the mocks from ``self.service(...)``, checks
the expectations and rolls everything back. ``manage.py tasker_test_scenarios``
runs them for loaded templates; :func:`scenario_params` and the pytest fixture
``run_tasker_scenario`` run them from template files in a pytest suite.

Nothing here needs factory-boy or pytest (``scenario_params`` imports pytest when
called), so the management command works in a production install.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction

from ..handlers.services import NOT_MOCKED, import_class, scenario_overrides

__all__ = [
    "Scenario",
    "ScenarioCase",
    "ScenarioResult",
    "context_from_test_data",
    "find_scenario",
    "run_case",
    "run_scenario",
    "scenario_cases",
    "scenario_context",
    "scenario_params",
    "scenarios_of",
    "testing_section_warnings",
]

#: Keys of a ``test_scenarios`` entry that have behaviour.
SCENARIO_KEYS = frozenset(
    {"name", "description", "steps", "expected_error", "timeout_step", "retry_expected", "context"}
)


# ---------------------------------------------------------------------------
# Reading the section
# ---------------------------------------------------------------------------


def template_label(template: Mapping[str, Any]) -> str:
    return f"{template.get('namespace')}/{template.get('name')}@{template.get('version')}"


def testing_section(template: Mapping[str, Any]) -> dict[str, Any]:
    """``template["sections"]["testing"]`` of a stored template dict (``{}`` if absent)."""
    section = (template.get("sections") or {}).get("testing")
    return section if isinstance(section, dict) else {}


def _singular(word: str) -> str:
    """``amounts`` -> ``amount``, ``currencies`` -> ``currency``, ``boxes`` -> ``box``."""
    if word.endswith("ies") and len(word) > 3:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def context_from_test_data(test_data: Any) -> dict[str, Any]:
    """The context ``testing.test_data`` gives a scenario (see docs/testing.md).

    Every key but ``enabled`` is one context field, named without its ``test_``
    prefix. A list gives its first value under the singular name
    (``test_payment_amounts: [1, 10]`` -> ``payment_amount: 1``, ``test_currencies``
    -> ``currency``); an empty list gives nothing; any other value is used as is
    under the key without ``test_``. ``enabled: false`` turns the whole mapping off.
    """
    if not isinstance(test_data, dict) or test_data.get("enabled", True) is False:
        return {}
    context: dict[str, Any] = {}
    for key, value in test_data.items():
        if key == "enabled":
            continue
        name = key[len("test_") :] if key.startswith("test_") and len(key) > 5 else key
        if isinstance(value, list):
            if value:
                context[_singular(name)] = value[0]
        else:
            context[name] = value
    return context


def scenario_context(section: Mapping[str, Any], raw: Mapping[str, Any]) -> dict[str, Any]:
    """The task context of one scenario: test data, then the scenario's own ``context``."""
    context = context_from_test_data(section.get("test_data"))
    own = raw.get("context")
    if isinstance(own, dict):
        context.update(own)
    return context


@dataclass(frozen=True)
class Scenario:
    """One entry of ``testing.test_scenarios``, with the context it runs with."""

    name: str
    template: str
    description: str = ""
    steps: tuple[str, ...] = ()
    expected_error: str | None = None
    timeout_step: str | None = None
    retry_expected: bool | None = None
    context: dict[str, Any] = field(default_factory=dict)
    #: Problems that make the entry unrunnable (reported as a failure).
    problems: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict)


def _step_names(template: Mapping[str, Any]) -> list[str]:
    return [str(s.get("name")) for s in template.get("steps") or () if isinstance(s, dict)]


def _entry_problems(raw: Any, index: int, step_names: list[str]) -> list[str]:
    where = f"testing.test_scenarios[{index}]"
    if not isinstance(raw, dict):
        return [f"{where} is not a mapping"]
    problems = []
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}.name must be a non-empty string")
    steps = raw.get("steps")
    if steps is not None:
        if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
            problems.append(f"{where}.steps must be a list of step names")
        else:
            problems += [
                f"{where}.steps: the template has no step {s!r}"
                for s in steps
                if s not in step_names
            ]
    error = raw.get("expected_error")
    if error is not None and (not isinstance(error, str) or not error.strip()):
        problems.append(f"{where}.expected_error must be an error class name or code")
    timeout_step = raw.get("timeout_step")
    if timeout_step is not None:
        if not isinstance(timeout_step, str):
            problems.append(f"{where}.timeout_step must be a step name")
        elif timeout_step not in step_names:
            problems.append(f"{where}.timeout_step: the template has no step {timeout_step!r}")
    retry = raw.get("retry_expected")
    if retry is not None and not isinstance(retry, bool):
        problems.append(f"{where}.retry_expected must be true or false")
    context = raw.get("context")
    if context is not None and not isinstance(context, dict):
        problems.append(f"{where}.context must be a mapping")
    return problems


def scenarios_of(template: Mapping[str, Any]) -> list[Scenario]:
    """The scenarios of a template dict (``NamedTask.template`` or ``TaskTemplate.to_dict()``)."""
    section = testing_section(template)
    entries = section.get("test_scenarios")
    if not isinstance(entries, list):
        return []
    label = template_label(template)
    step_names = _step_names(template)
    scenarios = []
    for index, raw in enumerate(entries):
        problems = _entry_problems(raw, index, step_names)
        entry = raw if isinstance(raw, dict) else {}
        name = entry.get("name")
        steps = entry.get("steps")
        retry = entry.get("retry_expected")
        scenarios.append(
            Scenario(
                name=name if isinstance(name, str) and name.strip() else f"#{index + 1}",
                template=label,
                description=str(entry.get("description") or ""),
                steps=tuple(steps) if isinstance(steps, list) else (),
                expected_error=entry.get("expected_error") or None,
                timeout_step=entry.get("timeout_step") or None,
                retry_expected=retry if isinstance(retry, bool) else None,
                context=scenario_context(section, entry),
                problems=tuple(problems),
                raw=dict(entry),
            )
        )
    return scenarios


def mock_classes(section: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``{service: mock class}`` for ``testing.mock_services``, and the problems found."""
    from ..conf import tasker_settings

    mapping = section.get("mock_services")
    if mapping is None:
        return {}, []
    if not isinstance(mapping, dict):
        return {}, ["testing.mock_services must map service names to mock names"]
    registered = tasker_settings.MOCK_SERVICES or {}
    classes: dict[str, Any] = {}
    problems: list[str] = []
    for service, mock in mapping.items():
        if not isinstance(mock, str) or mock not in registered:
            problems.append(
                f"testing.mock_services.{service}: mock {mock!r} is not in TASKER['MOCK_SERVICES']"
            )
            continue
        try:
            classes[str(service)] = import_class(registered[mock])
        except ImportError as exc:
            problems.append(
                f"testing.mock_services.{service}: mock {mock!r} "
                f"(TASKER['MOCK_SERVICES'][{mock!r}]) does not import: {exc}"
            )
    return classes, problems


def testing_section_warnings(template: Mapping[str, Any]) -> list[str]:
    """What system check W012 reports about a loaded template's ``testing`` section."""
    section = testing_section(template)
    if not section:
        return []
    _classes, problems = mock_classes(section)
    entries = section.get("test_scenarios")
    if entries is not None and not isinstance(entries, list):
        problems.append("testing.test_scenarios must be a list of scenarios")
    step_names = _step_names(template)
    for index, raw in enumerate(entries if isinstance(entries, list) else ()):
        problems += _entry_problems(raw, index, step_names)
        if isinstance(raw, dict):
            problems += [
                f"testing.test_scenarios[{index}].{key}: unknown key, it has no effect"
                for key in raw
                if key not in SCENARIO_KEYS
            ]
    test_data = section.get("test_data")
    if test_data is not None and not isinstance(test_data, dict):
        problems.append("testing.test_data must be a mapping")
    elif isinstance(test_data, dict) and not isinstance(test_data.get("enabled", True), bool):
        problems.append("testing.test_data.enabled must be true or false")
    return problems


# ---------------------------------------------------------------------------
# Running one scenario
# ---------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    """The outcome of one scenario; the database rows are gone, these snapshots stay."""

    scenario: Scenario
    passed: bool
    detail: str
    failures: list[str] = field(default_factory=list)
    task_status: str | None = None
    #: ``{step name: {"status", "attempts", "results", "last_error"}}`` in position order.
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Every attempt: ``{"step", "attempt", "outcome", "error_class", "error_code", "message"}``.
    attempts: list[dict[str, Any]] = field(default_factory=list)
    #: The mock instances the handlers used, by service name.
    mocks: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def describe(self) -> str:
        """A multi-line report (what pytest shows for a failing scenario)."""
        lines = [f"{self.result} {self.scenario.template} {self.scenario.name}: {self.detail}"]
        for name, step in self.steps.items():
            error = step.get("last_error") or {}
            suffix = f"  {error.get('error_class')}: {error.get('message')}" if error else ""
            lines.append(f"  {name:<28} {step['status']:<18} {step['attempts']} attempt(s){suffix}")
        return "\n".join(lines)


class _Run:
    """The overrides a running scenario applies (see tasker_django.handlers.services)."""

    def __init__(self, scenario: Scenario, classes: dict[str, Any]) -> None:
        self.scenario = scenario
        self.classes = classes
        self.mocks: dict[str, Any] = {}
        self.task_id: int | None = None

    def mock_service(self, name: str) -> Any:
        if name not in self.classes:
            return NOT_MOCKED
        if name not in self.mocks:
            self.mocks[name] = self.classes[name](self.scenario)
        return self.mocks[name]

    def injected_timeout(self, task_id: int, step_name: str, attempt: int) -> str | None:
        if task_id == self.task_id and step_name == self.scenario.timeout_step and attempt == 1:
            return (
                f"step {step_name!r} timed out on its first attempt "
                f"(injected by test scenario {self.scenario.name!r})"
            )
        return None


def _error_names(dotted: str) -> set[str]:
    """The class name, dotted path and base class names of a stored ``error_class``."""
    names = {dotted, dotted.rsplit(".", 1)[-1]} if dotted else set()
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        if isinstance(obj, type):
            for base in obj.__mro__:
                names.add(base.__name__)
                names.add(f"{base.__module__}.{base.__qualname__}")
        break
    return names


def _error_matches(expected: str, error_class: str, error_code: str) -> bool:
    if error_code and error_code.lower() == expected.lower():
        return True
    return expected in _error_names(error_class)


def _class_names(cls: type) -> set[str]:
    return {n for b in cls.__mro__ for n in (b.__name__, f"{b.__module__}.{b.__qualname__}")}


def _snapshot(task: Any) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    from ..models import StepAttempt, WorkflowStep

    steps = {
        row["name"]: {
            "status": row["status"],
            "attempts": row["attempts"],
            "results": row["results"],
            "last_error": row["last_error"],
        }
        for row in WorkflowStep.objects.filter(task=task)
        .order_by("position", "pk")
        .values("name", "status", "attempts", "results", "last_error")
    }
    attempts = [
        {
            "step": row["step__name"],
            "attempt": row["attempt_number"],
            "outcome": row["outcome"],
            "error_class": row["error_class"],
            "error_code": row["error_code"],
            "message": row["error_message"],
        }
        for row in StepAttempt.objects.filter(task_id=task.pk)
        .order_by("step__position", "attempt_number", "pk")
        .values(
            "step__name", "attempt_number", "outcome", "error_class", "error_code", "error_message"
        )
    ]
    return steps, attempts


def _evaluate(result: ScenarioResult) -> None:
    """Fill ``passed``, ``failures`` and ``detail`` from the snapshots."""
    s = result.scenario
    failures: list[str] = []
    notes: list[str] = []
    status = result.task_status
    failed = [a for a in result.attempts if a["outcome"] != "success"]
    if s.expected_error:
        if status != "error":
            failures.append(f"expected {s.expected_error}, but the task ended {status}")
        match = next(
            (
                a
                for a in failed
                if _error_matches(s.expected_error, a["error_class"] or "", a["error_code"] or "")
            ),
            None,
        )
        if match is None:
            seen = ", ".join(sorted({(a["error_class"] or "").rsplit(".", 1)[-1] for a in failed}))
            failures.append(
                f"no attempt raised {s.expected_error}"
                + (f" (raised: {seen})" if seen else " (no attempt failed)")
            )
        else:
            notes.append(
                f"{match['step']} raised {match['error_class'].rsplit('.', 1)[-1]}"
                f" on attempt {match['attempt']}"
            )
    elif status != "complete":
        why = ""
        if failed:
            last = failed[-1]
            why = f": {last['step']} {last['error_class'].rsplit('.', 1)[-1]}: {last['message']}"
        failures.append(f"the task ended {status}{why}")
    for name in s.steps:
        step = result.steps.get(name)
        if step is None:
            failures.append(f"the task has no step {name!r}")
        elif step["status"] != "complete":
            failures.append(f"step {name} ended {step['status']}, expected complete")
    if s.steps and not any(f.startswith("step ") for f in failures):
        notes.append(f"{len(s.steps)} step(s) complete")
    if s.timeout_step:
        first = next(
            (a for a in result.attempts if a["step"] == s.timeout_step and a["attempt"] == 1),
            None,
        )
        step = result.steps.get(s.timeout_step) or {}
        if first is None or first["outcome"] != "timeout":
            outcome = first["outcome"] if first else "never ran"
            failures.append(f"{s.timeout_step} attempt 1 did not time out ({outcome})")
        elif step.get("status") != "complete":
            failures.append(
                f"{s.timeout_step} timed out on attempt 1 and no retry succeeded "
                f"(ended {step.get('status')} after {step.get('attempts')} attempt(s))"
            )
        else:
            notes.append(
                f"{s.timeout_step} timed out on attempt 1, complete on attempt {step['attempts']}"
            )
    retried = sorted({a["step"] for a in result.attempts if a["attempt"] > 1})
    if s.retry_expected is True and not retried:
        failures.append("expected a retry, but no step was retried")
    elif s.retry_expected is False and retried:
        failures.append(f"expected no retry, but {', '.join(retried)} retried")
    elif retried:
        notes.append(f"retried: {', '.join(retried)}")
    result.failures = failures
    result.passed = not failures
    if failures:
        result.detail = "; ".join(failures)
    else:
        result.detail = "; ".join([f"task {status}", *notes])


def run_scenario(named_task: Any, scenario: Scenario, *, clock: Any = None) -> ScenarioResult:
    """Run one scenario of ``named_task`` (a stored ``NamedTask``) and roll it back.

    The task is created with ``scenario.context`` and run inline with a fake clock;
    handlers get the template's mocks from ``self.service(...)``. Everything runs in
    a transaction (a savepoint inside an outer one) that is rolled back, so no row
    of it persists; signals and escalation actions, which run after a commit, are
    not sent. Never raises for a failing scenario: see ``ScenarioResult.passed``.
    """
    from ..exceptions import TaskValidationError
    from ..services.tasks import create_task
    from .inline import FakeClock, run_task_to_completion

    result = ScenarioResult(scenario=scenario, passed=False, detail="")
    classes, problems = mock_classes(testing_section(named_task.template))
    problems = [*scenario.problems, *problems]
    if problems:
        result.failures = problems
        result.detail = "; ".join(problems)
        return result
    run = _Run(scenario, classes)
    try:
        with transaction.atomic():
            try:
                with scenario_overrides(run):
                    try:
                        task = create_task(
                            named_task.name,
                            namespace=named_task.namespace.name,
                            version=named_task.version,
                            context=dict(scenario.context),
                            initiator="tasker_test_scenarios",
                            reason=f"test scenario {scenario.name}",
                        )
                    except TaskValidationError as exc:
                        _refused(result, exc)
                        return result
                    run.task_id = task.pk
                    task = run_task_to_completion(task, clock=clock or FakeClock())
                    result.task_status = task.status
                    result.steps, result.attempts = _snapshot(task)
            finally:
                transaction.set_rollback(True)
    except Exception as exc:  # an unexpected error of this scenario: report it, go on
        result.failures = [f"{type(exc).__name__}: {exc}"]
        result.detail = result.failures[0]
        result.mocks = run.mocks
        return result
    result.mocks = run.mocks
    _evaluate(result)
    return result


def _refused(result: ScenarioResult, exc: Exception) -> None:
    """The task was refused at creation: a pass only if that was the expected error."""
    expected = result.scenario.expected_error
    message = " ".join(str(exc).split())
    result.task_status = "refused"
    if expected and expected in _class_names(type(exc)):
        result.passed = True
        result.detail = f"refused at creation as expected: {message}"
    else:
        result.failures = [f"the task was refused at creation: {message}"]
        result.detail = result.failures[0]


# ---------------------------------------------------------------------------
# pytest: scenarios from template files
# ---------------------------------------------------------------------------

_NAME = re.compile(r"^(?P<namespace>[\w.-]+)/(?P<name>[\w.-]+)(?:@(?P<version>[\w.+-]+))?$")


@dataclass(frozen=True)
class ScenarioCase:
    """One scenario of one template file, as collected by :func:`scenario_cases`."""

    source: str
    template: str
    scenario: str
    environment: str | None = None

    @property
    def id(self) -> str:
        return f"{self.template}:{self.scenario}"


def _default_environment() -> str | None:
    try:
        from ..conf import tasker_settings

        env = tasker_settings.ENVIRONMENT
    except Exception:  # settings not configured
        return None
    return env if isinstance(env, str) else None


def _template_dir_file(namespace: str, name: str, version: str | None) -> Path | None:
    from ..conf import tasker_settings
    from ..definitions import version_key

    for base in tasker_settings.TEMPLATE_DIRS:
        root = Path(base).resolve()
        folder = (root / namespace / name).resolve()
        if not folder.is_relative_to(root) or folder == root or not folder.is_dir():
            continue
        files = sorted(
            (p for p in folder.glob("*.y*ml") if p.is_file()),
            key=lambda p: version_key(p.stem) if version is None else 0,
            reverse=True,
        )
        if version is not None:
            files = [p for p in files if p.stem == version]
        if files:
            return files[0]
    return None


def _source_files(source: str | os.PathLike[str]) -> list[Path]:
    from ..definitions import iter_template_files

    path = Path(source)
    if path.exists():
        return iter_template_files(path)
    match = _NAME.match(str(source))
    found = match and _template_dir_file(match["namespace"], match["name"], match["version"])
    if not found:
        raise ValueError(
            f"{os.fspath(source)!r} is neither a template file or directory nor a "
            "NAMESPACE/NAME[@VERSION] found in TASKER['TEMPLATE_DIRS']"
        )
    return [found]


def scenario_cases(
    *sources: str | os.PathLike[str], environment: str | None = None
) -> list[ScenarioCase]:
    """Every scenario of the templates in ``sources``.

    A source is a template file, a directory (searched recursively for ``*.yaml``
    and ``*.yml``) or ``NAMESPACE/NAME[@VERSION]`` looked up in
    ``TASKER["TEMPLATE_DIRS"]``. Files are parsed (not stored) with ``environment``
    (default ``TASKER["ENVIRONMENT"]``); those without scenarios are skipped. Raises
    ``ValueError`` when nothing declares a scenario.
    """
    from ..definitions import load_template_file

    env = environment if environment is not None else _default_environment()
    cases: list[ScenarioCase] = []
    for source in sources:
        for path in _source_files(source):
            template = load_template_file(path, environment=env).to_dict()
            cases += [
                ScenarioCase(os.fspath(path), s.template, s.name, env)
                for s in scenarios_of(template)
            ]
    if not cases:
        shown = ", ".join(os.fspath(s) for s in sources)
        raise ValueError(f"no template in {shown} declares testing.test_scenarios")
    return cases


def scenario_params(*sources: str | os.PathLike[str], environment: str | None = None) -> list[Any]:
    """:func:`scenario_cases` as ``pytest.param`` objects for ``pytest.mark.parametrize``."""
    import pytest

    return [
        pytest.param(case, id=case.id) for case in scenario_cases(*sources, environment=environment)
    ]


def run_case(case: ScenarioCase, *, clock: Any = None) -> ScenarioResult:
    """Load the case's template file (handlers must be registered) and run its scenario."""
    from ..definitions import load_template_file
    from ..services.templates import handler_resolver, save_template

    template = load_template_file(
        case.source, environment=case.environment, handler_resolver=handler_resolver
    )
    named_task = save_template(template, force=True).named_task
    for scenario in scenarios_of(named_task.template):
        if scenario.name == case.scenario:
            return run_scenario(named_task, scenario, clock=clock)
    raise LookupError(f"{case.source} has no test scenario {case.scenario!r}")


def find_scenario(named_task: Any, name: str) -> Scenario:
    """The scenario ``name`` of a stored template (LookupError if it has none)."""
    scenarios = scenarios_of(named_task.template)
    for scenario in scenarios:
        if scenario.name == name:
            return scenario
    known = ", ".join(s.name for s in scenarios) or "none"
    raise LookupError(f"{named_task} has no test scenario {name!r} (it has: {known})")
