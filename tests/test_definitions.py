"""Template parsing and validation (``tasker_django.definitions``): pure Python, no database."""

from __future__ import annotations

import json
import pickle
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tasker_django.definitions import (
    Backoff,
    StepDefinition,
    TaskTemplate,
    TemplateError,
    TemplateIssue,
    dependency_levels,
    find_cycle,
    iter_template_files,
    load_template_file,
    parse_template,
    topological_order,
    version_key,
)

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seed-templates"
SEED_FILES = sorted(SEEDS.glob("*.yaml"))


def parse(text: str, **kwargs) -> TaskTemplate:
    return parse_template(textwrap.dedent(text), **kwargs)


def issues_of(text: str, **kwargs) -> list[TemplateIssue]:
    with pytest.raises(TemplateError) as excinfo:
        parse(text, **kwargs)
    return excinfo.value.issues


def messages(text: str, **kwargs) -> list[tuple[int | None, str, str]]:
    return [(i.line, i.path, i.message) for i in issues_of(text, **kwargs)]


def minimal(extra: str = "", steps: str = "") -> str:
    return (
        "name: t\nversion: '1.0.0'\nstep_templates:\n  - name: a\n    handler_class: A\n"
        + steps
        + textwrap.dedent(extra)
    )


# -- the seed templates ----------------------------------------------------------------------


def test_seed_files_are_present():
    assert [p.name for p in SEED_FILES] == [
        "credit_card_payment.yaml",
        "payment_processing_task.yaml",
        "payment_workflow.yaml",
    ]


@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: p.stem)
def test_seed_templates_load_unchanged_in_every_environment(path):
    base = load_template_file(path)
    assert base.source == str(path)
    assert base.environment is None
    assert base.version == "1.0.0"
    assert base.steps
    for env in base.environments or ("development",):  # undeclared environments are ignored
        template = load_template_file(path, environment=env)
        assert [s.name for s in template.steps] == [s.name for s in base.steps]
        assert template.edges == base.edges
        assert template.environment == (env if base.environments else None)


def test_credit_card_payment_fields():
    t = load_template_file(SEEDS / "credit_card_payment.yaml")
    assert (t.namespace, t.name) == ("payments", "payment_processing/credit_card_payment")
    assert t.module_namespace == "PaymentProcessing"
    assert t.task_handler_class == "CreditCardPaymentHandler"
    assert t.named_steps == tuple(s.name for s in t.steps)
    assert t.environments == ("development", "staging", "production")
    assert t.schema is not None and t.schema["required"] == [
        "order_id",
        "payment_info",
        "customer_id",
    ]
    assert [e["name"] for e in t.custom_events] == [
        "payment_authorized",
        "payment_captured",
        "fraud_detected",
    ]
    fraud = t.step("check_fraud")
    assert fraud.handler_class == "PaymentProcessing::StepHandler::FraudCheckHandler"
    assert fraud.handler_config == {"risk_threshold": 0.8, "timeout_ms": 5000}
    assert fraud.depends_on == ("validate_payment",)
    assert fraud.max_attempts == 2
    assert fraud.timeout_seconds == 60.0
    assert fraud.dependent_system == "payment_gateway"  # template default
    assert fraud.backoff is None
    assert fraud.line == 62
    authorize = t.step("authorize_payment")
    assert authorize.depends_on == ("validate_payment", "check_fraud")
    assert authorize.backoff == Backoff("exponential", 1.0, 300.0, 2.0, True)
    assert ("validate_payment", "authorize_payment") in t.edges
    assert ("check_fraud", "authorize_payment") in t.edges
    assert len(t.edges) == 5
    assert t.levels() == [
        ["validate_payment"],
        ["check_fraud"],
        ["authorize_payment"],
        ["capture_payment"],
        ["send_confirmation"],
    ]
    with pytest.raises(KeyError):
        t.step("nope")


def test_credit_card_environments_deep_merge_handler_config():
    dev = load_template_file(SEEDS / "credit_card_payment.yaml", environment="development")
    assert dev.step("check_fraud").handler_config == {
        "risk_threshold": 0.5,
        "timeout_ms": 5000,
        "debug_mode": True,
    }
    assert dev.step("authorize_payment").handler_config == {"timeout_ms": 30000, "debug_mode": True}
    assert dev.step("validate_payment").handler_config["validation_rules"][0] == "check_card_expiry"
    assert "debug_mode" not in dev.step("capture_payment").handler_config
    # Other keys of an overridden step are untouched.
    assert dev.step("check_fraud").max_attempts == 2
    staging = load_template_file(SEEDS / "credit_card_payment.yaml", environment="staging")
    assert staging.step("check_fraud").handler_config == {"risk_threshold": 0.7, "timeout_ms": 5000}


def test_payment_processing_task_development_overrides():
    path = SEEDS / "payment_processing_task.yaml"
    base = load_template_file(path)
    dev = load_template_file(path, environment="development")
    assert base.task_config["retry_limit"] == 3
    assert dev.task_config["retry_limit"] == 1
    assert dev.task_config["timeout_seconds"] == 60
    assert dev.task_config["priority"] == "high"  # shallow override keeps other keys
    assert dev.task_config["tags"] == ["payment", "customer_workflow", "financial"]
    config = dev.step("payment_processing").handler_config
    assert config["max_amount"] == 100
    assert config["processor"] == "example_payment_gateway"
    assert config["supported_currencies"] == ["USD", "EUR", "GBP"]
    assert base.step("payment_processing").handler_config["max_amount"] == 10000
    assert load_template_file(path, environment="production").task_config["retry_limit"] == 5
    audit = dev.step("audit_log")
    assert audit.backoff == Backoff("exponential", 1.0, 60.0, 1.2, False)
    assert audit.max_attempts == 10
    assert set(dev.sections) == {"events", "monitoring"}
    assert dev.sections["events"]["custom_events"][0]["name"] == "payment_amount_exceeds_limit"
    assert dev.workflow_config["max_concurrent_steps"] == 3
    assert dev.levels() == [["payment_processing"], ["payment_notification", "audit_log"]]


def test_payment_workflow_sections_and_ignored_environment():
    path = SEEDS / "payment_workflow.yaml"
    t = load_template_file(path, environment="development")  # no environments: ignored
    assert t.environment is None and t.environments == ()
    assert t.namespace == "default"
    assert set(t.sections) == {
        "constraints",
        "events",
        "error_handling",
        "monitoring",
        "security",
        "performance",
        "testing",
    }
    assert t.sections["testing"]["test_scenarios"][2]["retry_expected"] is True
    assert t.settings["default_retry_limit"] == 3
    assert t.step("payment_verification").depends_on == ("payment_processing",)
    assert t.step("payment_processing").depends_on == ()
    assert topological_order([s.name for s in t.steps], t.edges)[-1] == "generate_analytics"


# -- reporting every problem at once ---------------------------------------------------------

COMBINED = """\
name: broken
version: "1.0.0"
schema:
  type: object
  properties:
    amount:
      type: numbr
step_templates:
  - name: a
    handler_class: A
    depends_on_step: c
  - name: b
    handler_class: B
    depends_on_steps: [a, ghost]
  - name: c
    handler_class: C
    depends_on_steps:
      - b
"""


def test_cycle_unknown_dependency_and_bad_schema_reported_together():
    with pytest.raises(TemplateError) as excinfo:
        parse_template(COMBINED, source="broken.yaml")
    found = [(i.line, i.path, i.message) for i in excinfo.value.issues]
    assert found == [
        (
            7,
            "schema.properties.amount.type",
            "invalid JSON Schema: 'numbr' is not one of "
            "['array', 'boolean', 'integer', 'null', 'number', 'object', 'string']",
        ),
        (11, "step_templates[0].depends_on_step", "dependency cycle: a -> b -> c -> a"),
        (
            14,
            "step_templates[1].depends_on_steps[1]",
            "unknown dependency 'ghost': there is no step named 'ghost'",
        ),
    ]
    assert all(i.source == "broken.yaml" for i in excinfo.value.issues)
    text = str(excinfo.value)
    assert text.splitlines()[1] == (
        "broken.yaml:11: step_templates[0].depends_on_step: dependency cycle: a -> b -> c -> a"
    )
    assert len(text.splitlines()) == 3


def test_issues_are_sorted_by_line_and_template_error_is_a_value_error():
    text = minimal(steps="    depends_on_step: zz\n", extra="named_steps: [a, b]\nversion: 2\n")
    with pytest.raises(ValueError) as excinfo:
        parse_template(text)
    assert isinstance(excinfo.value, TemplateError)
    assert [i.line for i in excinfo.value.issues] == [6, 7, 8]
    copy = pickle.loads(pickle.dumps(excinfo.value))
    assert copy.issues == excinfo.value.issues


def test_issue_str_omits_missing_parts():
    assert str(TemplateIssue("f.yaml", 3, "a.b", "bad")) == "f.yaml:3: a.b: bad"
    assert str(TemplateIssue("f.yaml", None, "", "bad")) == "f.yaml: bad"
    assert str(TemplateIssue("", None, "x", "bad")) == "x: bad"


# -- each kind of error ----------------------------------------------------------------------


def test_yaml_syntax_error_has_line():
    [issue] = issues_of("name: x\nversion: 1\nsteps:\n  - name: a: b\n  - c\n")
    assert issue.line == 4
    assert issue.message.startswith("invalid YAML: mapping values are not allowed")
    [issue] = issues_of("name: x\nversion: 1\nsteps:\n  - name: [a\n  - b\n")
    assert issue.line is not None and issue.line >= 4
    assert "did not find expected ',' or ']'" in issue.message


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("- a\n- b\n", "must be a mapping of keys to values, not a list"),
        ("just text\n", "not a str"),
        ("", "the document is empty"),
        ("# only a comment\n", "the document is empty"),
        ("a: 1\n---\nb: 2\n", "expected a single document"),
        ("a: !!python/object/apply:os.system [ls]\n", "could not determine a constructor"),
        ("a: &x [*x]\n", "recursive alias"),
    ],
)
def test_unusable_documents(text, fragment):
    issues = issues_of(text)
    assert len(issues) == 1
    assert fragment in issues[0].message


def test_duplicate_keys_are_errors_with_both_lines():
    found = messages(minimal(steps="    handler_class: B\n", extra="name: again\n"))
    assert found == [
        (6, "step_templates[0].handler_class", "duplicate key 'handler_class' (first on line 5)"),
        (7, "name", "duplicate key 'name' (first on line 1)"),
    ]


def test_values_json_cannot_hold_are_errors():
    found = messages(minimal(steps="    handler_config:\n      when: 2024-01-01\n      1: x\n"))
    date = "a date/time value is not allowed here; quote it: '2024-01-01'"
    assert (7, "step_templates[0].handler_config.when", date) in found
    assert (6, "step_templates[0].handler_config", "mapping key 1 must be a string") in found


def test_wrong_types_reported_with_paths_and_lines():
    text = """\
    name: t
    version: [1]
    named_steps: a
    step_templates:
      - name: a
        handler_class: A
        default_retry_limit: three
        timeout_seconds: -1
        default_retryable: "yes"
        retry_backoff: quadratic
      - name: b
        handler_class: B
        retry_backoff: {initial_delay: x, jiter: true}
    settings:
      default_timeout: 0
    """
    found = messages(text)
    assert (2, "version", "[1] is not of type 'string', 'number'") in found
    assert (3, "named_steps", "'a' is not of type 'array', 'null'") in found
    assert (7, "step_templates[0].default_retry_limit", "'three' is not of type 'integer'") in found
    below = "-1 is less than or equal to the minimum of 0"
    assert (8, "step_templates[0].timeout_seconds", below) in found
    assert (9, "step_templates[0].default_retryable", "'yes' is not of type 'boolean'") in found
    assert (
        10,
        "step_templates[0].retry_backoff",
        "'quadratic' is not one of ['exponential', 'linear', 'fixed']",
    ) in found
    not_number = "'x' is not of type 'number'"
    assert (13, "step_templates[1].retry_backoff.initial_delay", not_number) in found
    assert (
        13,
        "step_templates[1].retry_backoff",
        "Additional properties are not allowed ('jiter' was unexpected)",
    ) in found
    assert (15, "settings.default_timeout", "0 is less than or equal to the minimum of 0") in found
    assert len(found) == 9


def test_missing_name_and_version():
    found = messages("description: x\nstep_templates:\n  - name: a\n    handler_class: A\n")
    assert (1, "name", "missing required key 'name'") in found
    assert (1, "version", "missing required key 'version'") in found


@pytest.mark.parametrize("steps", ["", "step_templates: []\n", "step_templates:\n"])
def test_no_steps(steps):
    found = messages("name: t\nversion: '1'\n" + steps)
    assert [m for _, _, m in found] == ["the template defines no steps"]


def test_duplicate_step_names():
    found = messages(minimal(steps="  - name: a\n    handler_class: B\n"))
    duplicate = "duplicate step name 'a' (first defined on line 4)"
    assert found == [(6, "step_templates[1].name", duplicate)]


def test_unknown_dependency_named_with_suggestion():
    found = messages(minimal(steps="  - name: b\n    handler_class: B\n    depends_on_step: aa\n"))
    assert found == [
        (
            8,
            "step_templates[1].depends_on_step",
            "unknown dependency 'aa': there is no step named 'aa'; did you mean 'a'?",
        )
    ]


def test_self_dependency():
    found = messages(minimal(steps="    depends_on_steps: [a]\n"))
    assert found == [(6, "step_templates[0].depends_on_steps[0]", "step 'a' depends on itself")]


def test_cycle_is_named():
    text = """\
    name: t
    version: '1'
    steps:
      - {name: x, handler_class: X, depends_on_step: z}
      - {name: y, handler_class: Y, depends_on_step: x}
      - {name: z, handler_class: Z, depends_on_step: y}
      - {name: w, handler_class: W, depends_on_step: x}
    """
    found = messages(text)
    assert found == [(4, "steps[0].depends_on_step", "dependency cycle: x -> y -> z -> x")]


def test_named_steps_mismatch_says_which():
    found = messages(
        minimal(steps="  - name: b\n    handler_class: B\n", extra="named_steps: [a, c, a]\n")
    )
    assert (8, "named_steps[1]", "named_steps lists 'c', which is not a step") in found
    assert (8, "named_steps[2]", "'a' is listed twice in named_steps") in found
    assert (8, "named_steps", "named_steps lacks step(s): b") in found
    assert len(found) == 3


def test_invalid_json_schema_in_schema_and_events():
    text = minimal(
        extra="""\
        input_schema:
          type: object
          required: order_id
        custom_events:
          - name: ev
            schema: {type: [1]}
        """
    )
    found = messages(text)
    message = "invalid JSON Schema: 'order_id' is not of type 'array'"
    assert (8, "input_schema.required", message) in found
    assert any(p.startswith("custom_events[0].schema.type") and line == 11 for line, p, _ in found)


def test_unknown_environment_names_the_declared_ones():
    text = minimal(extra="environments:\n  dev: {}\n  prod: {}\n")
    found = messages(text, environment="qa")
    assert found == [(6, "environments", "unknown environment 'qa'; declared: 'dev', 'prod'")]
    assert parse_template(text, environment="dev").environment == "dev"
    assert parse_template(text).environment is None


def test_environment_overriding_unknown_step_is_an_error_in_any_environment():
    text = minimal(
        extra="""\
        environments:
          dev:
            step_templates:
              - name: ghost
                handler_config: {x: 1}
          prod:
            steps:
              phantom: {}
            colour: blue
        """
    )
    found = messages(text)  # checked even when no environment is applied
    assert found == [
        (
            9,
            "environments.dev.step_templates[0].name",
            "environment 'dev' overrides unknown step 'ghost'",
        ),
        (
            11,
            "environments.prod",
            "Additional properties are not allowed ('colour' was unexpected)",
        ),
        (
            13,
            "environments.prod.steps.phantom",
            "environment 'prod' overrides unknown step 'phantom'",
        ),
    ]


def test_alias_conflicts_are_errors():
    text = """\
    name: t
    namespace: a
    namespace_name: b
    version: '1'
    schema: {type: object}
    input_schema: {type: object}
    step_templates:
      - name: a
        handler_class: A
        handler: {callable: B, initialization: {}}
        handler_config: {}
        depends_on_steps: []
        dependencies: []
        default_retry_limit: 2
        retry_backoff: fixed
        retry: {max_attempts: 3, backoff: linear}
    steps: []
    """
    found = messages(text)
    assert [(line, p) for line, p, _ in found] == [
        (3, "namespace_name"),
        (6, "input_schema"),
        (10, "step_templates[0].handler.callable"),
        (10, "step_templates[0].handler.initialization"),
        (13, "step_templates[0].dependencies"),
        (16, "step_templates[0].retry.max_attempts"),
        (16, "step_templates[0].retry.backoff"),
        (17, "steps"),
    ]
    assert found[0][2] == "'namespace_name' is an alias of 'namespace'; give only one"


def test_handler_resolver_failures_are_reported_per_step():
    calls = []

    def resolver(reference):
        calls.append(reference)
        if reference == "Missing":
            raise ImportError("No module named 'missing'")
        return object

    text = minimal(steps="  - name: b\n    handler: {callable: Missing}\n")
    found = messages(text, handler_resolver=resolver)
    assert found == [
        (
            7,
            "step_templates[1].handler.callable",
            "handler class 'Missing' cannot be resolved: No module named 'missing'",
        )
    ]
    assert calls == ["A", "Missing"]
    assert parse_template(text).step("b").handler_class == "Missing"  # no resolver, no check


def test_step_without_handler_class():
    found = messages("name: t\nversion: '1'\nsteps:\n  - name: a\n")
    assert found == [(4, "steps[0]", "step 'a' has no handler_class")]


def test_backoff_max_below_initial():
    found = messages(minimal(steps="    retry_backoff: {initial_delay: 10, max_delay: 5}\n"))
    assert found == [
        (6, "step_templates[0].retry_backoff", "max_delay (5s) is smaller than initial_delay (10s)")
    ]


def test_load_template_file_errors(tmp_path):
    with pytest.raises(TemplateError) as excinfo:
        load_template_file(tmp_path / "missing.yaml")
    [issue] = excinfo.value.issues
    assert issue.source == str(tmp_path / "missing.yaml")
    assert issue.message.startswith("cannot read file:")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(TemplateError, match="cannot read file"):
        load_template_file(binary)


def test_mutated_seed_templates_only_ever_raise_template_error():
    rng = random.Random(20240601)
    seeds = [p.read_text() for p in SEED_FILES] + [COMBINED]
    junk = ["null", "[]", "{}", "1", "-3", "true", "'x'", "{name: 1}", ".nan", "&a [*a]", "*zz"]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        lines = rng.choice(seeds).splitlines()
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(lines))
            if rng.random() < 0.4:
                del lines[i]
            elif ":" in lines[i]:
                lines[i] = lines[i].split(":", 1)[0] + ": " + rng.choice(junk)
            else:
                lines.insert(i, lines[rng.randrange(len(lines))])
        env = rng.choice([None, "development", "qa"])
        try:
            template = parse_template("\n".join(lines), environment=env)
        except TemplateError as exc:
            assert exc.issues
            outcomes["error"] += 1
        else:
            json.dumps(template.to_dict(), allow_nan=False)
            outcomes["ok"] += 1
    assert outcomes["error"] > 50 and outcomes["ok"] > 10


# -- aliases, defaults, normalisation ---------------------------------------------------------

CANONICAL = """\
name: t
namespace: ns
version: '1.0.0'
schema: {type: object}
step_templates:
  - name: a
    handler_class: A
    handler_config: {k: 1}
  - name: b
    handler_class: B
    depends_on_step: a
    depends_on_steps: [c]
    default_retryable: false
    default_retry_limit: 4
    retry_backoff: {strategy: linear, initial_delay: 0.5, max_delay: 30}
  - name: c
    handler_class: C
"""

ALIASED = """\
name: t
namespace_name: ns
version: '1.0.0'
# the newer vocabulary
input_schema: {type: object}
steps:
  - name: a
    handler: {callable: A, initialization: {k: 1}}
  - name: b
    handler: {callable: B}
    depends_on_step: a
    dependencies: [c]
    retry: {retryable: false, max_attempts: 4, backoff: linear, backoff_base_ms: 500,
            max_backoff_ms: 30000}
  - name: c
    handler_class: C
"""


def test_aliases_mean_the_same_as_canonical_keys():
    canonical = parse_template(CANONICAL)
    aliased = parse_template(ALIASED)
    assert aliased.namespace == "ns"
    assert aliased.schema == {"type": "object"}
    b = aliased.step("b")
    assert b.handler_class == "B"
    assert b.depends_on == ("a", "c")
    assert (b.retryable, b.max_attempts) == (False, 4)
    assert b.backoff == Backoff("linear", 0.5, 30.0, 2.0, True)
    assert aliased.step("a").handler_config == {"k": 1}
    assert aliased.content_hash == canonical.content_hash
    assert aliased.levels() == [["a", "c"], ["b"]]


def test_depends_on_union_has_no_duplicates_in_written_order():
    steps = (
        "  - name: b\n    handler_class: B\n"
        "  - name: c\n    handler_class: C\n    depends_on_steps: [b, a, b]\n"
        "    depends_on_step: a\n"
    )
    t = parse(minimal(steps=steps))
    assert t.step("c").depends_on == ("b", "a")


def test_step_defaults_and_template_fallbacks():
    text = """\
    name: t
    version: '1'
    default_dependent_system: gateway
    settings: {default_retry_limit: 6, default_timeout: 45}
    task_config: {retry_limit: 9}
    step_templates:
      - name: a
        handler_class: A
      - name: b
        handler_class: B
        default_retry_limit: 2
        timeout_seconds: 5
        dependent_system: mailer
        skippable: true
        retry_backoff: fixed
        odd_key: {kept: [1]}
    """
    t = parse(text)
    a, b = t.steps
    assert (a.max_attempts, a.timeout_seconds, a.dependent_system) == (6, 45.0, "gateway")
    assert (a.retryable, a.skippable, a.backoff, a.handler_config, a.description) == (
        True,
        False,
        None,
        {},
        "",
    )
    assert (b.max_attempts, b.timeout_seconds, b.dependent_system) == (2, 5.0, "mailer")
    assert b.skippable is True
    assert b.backoff == Backoff("fixed", 1.0, 300.0, 2.0, True)
    assert b.extra == {"odd_key": {"kept": [1]}}
    no_settings = parse(text.replace("settings: {default_retry_limit: 6, default_timeout: 45}", ""))
    assert no_settings.steps[0].max_attempts == 9  # task_config.retry_limit
    assert no_settings.steps[0].timeout_seconds is None
    bare = parse(minimal())
    assert bare.steps[0].max_attempts is None and bare.namespace == "default"


def test_not_retryable_keeps_max_attempts_as_written():
    t = parse(minimal(steps="    default_retryable: false\n    default_retry_limit: 3\n"))
    assert (t.steps[0].retryable, t.steps[0].max_attempts) == (False, 3)


def test_backoff_mapping_fills_missing_members():
    t = parse(minimal(steps="    retry_backoff: {max_delay: 90}\n"))
    assert t.steps[0].backoff == Backoff("exponential", 1.0, 90.0, 2.0, True)
    assert Backoff.from_dict({}) == Backoff()
    assert Backoff.from_dict(Backoff("linear", 2, 4, 1.5, False).to_dict()) == Backoff(
        "linear", 2.0, 4.0, 1.5, False
    )


def test_numeric_version_keeps_its_written_form():
    assert parse(minimal().replace("'1.0.0'", "1.10")).version == "1.10"
    assert parse(minimal().replace("'1.0.0'", "2")).version == "2"


def test_unknown_top_level_keys_are_kept_as_sections():
    t = parse(minimal(extra="future_feature:\n  enabled: true\nsecurity: {x: 1}\n"))
    assert t.sections == {"future_feature": {"enabled": True}, "security": {"x": 1}}


def test_environment_override_map_form_replaces_other_keys_and_applies_settings():
    text = minimal(
        steps="    handler_config: {a: {b: 1, c: [1, 2]}, d: 1}\n    default_retry_limit: 5\n",
        extra="""\
        task_config: {retry_limit: 3, priority: low}
        environments:
          test:
            task_config: {retry_limit: 1}
            step_templates:
              a:
                handler_config: {a: {c: [3]}}
                default_retry_limit: 2
                timeout_seconds: 7
        """,
    )
    t = parse_template(text, environment="test")
    step = t.steps[0]
    assert step.handler_config == {"a": {"b": 1, "c": [3]}, "d": 1}
    assert (step.max_attempts, step.timeout_seconds) == (2, 7.0)
    assert t.task_config == {"retry_limit": 1, "priority": "low"}
    assert parse_template(text).steps[0].handler_config == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


def test_environment_override_can_introduce_a_cycle_which_is_reported():
    text = minimal(
        steps="  - name: b\n    handler_class: B\n    depends_on_step: a\n",
        extra="environments:\n  dev:\n    steps:\n      a: {depends_on_step: b}\n",
    )
    parse_template(text)
    with pytest.raises(TemplateError, match=r"dependency cycle: a -> b -> a"):
        parse_template(text, environment="dev")


def test_yaml_anchors_do_not_share_state_between_steps():
    steps = (
        "    handler_config: &cfg {x: 1}\n"
        "  - name: b\n    handler_class: B\n    handler_config: *cfg\n"
    )
    text = minimal(steps=steps)
    t = parse_template(text)
    t.steps[0].handler_config["x"] = 2
    assert t.steps[1].handler_config == {"x": 1}


# -- serialisation -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: p.stem)
def test_to_dict_round_trips_through_json(path):
    for env in (None, "development"):
        t = load_template_file(path, environment=env)
        data = t.to_dict()
        text = json.dumps(data, sort_keys=True, allow_nan=False)
        again = TaskTemplate.from_dict(json.loads(text))
        assert again == t
        assert again.to_dict() == data
        assert json.dumps(again.to_dict(), sort_keys=True) == text
        assert again.content_hash == t.content_hash


def test_step_definition_round_trip():
    step = StepDefinition(
        name="s",
        handler_class="H",
        depends_on=("a",),
        backoff=Backoff(),
        custom_events=({"name": "e"},),
        extra={"x": [1]},
        line=3,
    )
    assert StepDefinition.from_dict(json.loads(json.dumps(step.to_dict()))) == step


def test_content_hash_stable_and_sensitive():
    a = parse_template(CANONICAL, source="one.yaml")
    b = parse_template("# a comment\n\n" + CANONICAL, source="two.yaml")
    assert len(a.content_hash) == 64
    assert a.content_hash == b.content_hash  # source and line numbers do not count
    assert a.steps[0].line != b.steps[0].line
    changed = parse_template(CANONICAL.replace("{k: 1}", "{k: 2}"))
    assert changed.content_hash != a.content_hash
    bumped = parse_template(CANONICAL.replace("'1.0.0'", "'1.0.1'"))
    assert bumped.content_hash != a.content_hash
    dev = load_template_file(SEEDS / "credit_card_payment.yaml", environment="development")
    prod = load_template_file(SEEDS / "credit_card_payment.yaml", environment="production")
    assert dev.content_hash != prod.content_hash


# -- graph ---------------------------------------------------------------------------------------


def test_find_cycle():
    assert find_cycle(["a", "b", "c"], [("a", "b"), ("b", "c")]) is None
    assert find_cycle(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")]) == ["a", "b", "c", "a"]
    assert find_cycle(["a", "b"], [("b", "b")]) == ["b", "b"]
    assert find_cycle([], []) is None
    with pytest.raises(ValueError, match="unknown node 'z'"):
        find_cycle(["a"], [("a", "z")])
    with pytest.raises(ValueError, match="duplicate node"):
        find_cycle(["a", "a"], [])


def test_topological_order_is_stable_and_rejects_cycles():
    nodes = ["d", "c", "b", "a"]
    assert topological_order(nodes, [("a", "b")]) == ["d", "c", "a", "b"]
    assert topological_order(nodes, []) == nodes
    with pytest.raises(ValueError, match=r"dependency cycle: a -> b -> a"):
        topological_order(["a", "b"], [("a", "b"), ("b", "a")])


def test_dependency_levels_of_a_diamond():
    edges = [("top", "left"), ("top", "right"), ("left", "bottom"), ("right", "bottom")]
    assert dependency_levels(["top", "left", "right", "bottom"], edges) == [
        ["top"],
        ["left", "right"],
        ["bottom"],
    ]
    assert dependency_levels(["a", "b", "c"], [("a", "c")]) == [["a", "b"], ["c"]]
    assert dependency_levels([], []) == []


def _generated(n: int, chain: bool) -> str:
    lines = ["name: big", "version: '1.0.0'", "step_templates:"]
    for i in range(n):
        lines += [f"  - name: s{i}", "    handler_class: H", "    handler_config: {n: 1}"]
        if i:
            lines.append(f"    depends_on_step: s{i - 1}" if chain else "    depends_on_step: s0")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("chain", [True, False], ids=["chain", "wide"])
def test_thousand_step_template_parses_quickly(chain):
    text = _generated(1000, chain)
    started = time.perf_counter()
    t = parse_template(text)
    levels = t.levels()
    assert len(t.content_hash) == 64
    elapsed = time.perf_counter() - started
    assert len(t.steps) == 1000
    assert len(levels) == (1000 if chain else 2)
    assert elapsed < 2.0, f"{elapsed:.2f}s"


# -- versions and files --------------------------------------------------------------------------


def test_version_key_ordering():
    ordered = [
        "banana",
        "latest",
        "0.9.0",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc1",
        "1.0.0",
        "1.2.0",
        "1.9.0",
        "1.10.0",
        "2.0.0",
    ]
    shuffled = ordered[:]
    random.Random(1).shuffle(shuffled)
    assert sorted(shuffled, key=version_key) == ordered
    assert version_key("1.10.0") > version_key("1.9.0")
    assert version_key("1.0.0-rc1") < version_key("1.0.0")
    assert version_key("1.2") < version_key("1.2.1")
    assert version_key("v2.0.0") > version_key("1.99.99")
    assert max(["1.0.0", "1.0.0+build"], key=version_key) == "1.0.0+build"


def test_iter_template_files(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "deep").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ["a.yaml", "b/x.yml", "b/deep/y.YAML", "b/notes.txt", ".hidden/z.yaml"]:
        (tmp_path / name).write_text("x: 1\n")
    files = iter_template_files([tmp_path, tmp_path / "a.yaml", str(tmp_path / "b")])
    assert [p.relative_to(tmp_path).as_posix() for p in files] == [
        "a.yaml",
        "b/deep/y.YAML",
        "b/x.yml",
    ]
    assert iter_template_files(tmp_path / "b" / "notes.txt") == [tmp_path / "b" / "notes.txt"]
    assert len(iter_template_files(SEEDS)) == 3
    with pytest.raises(TemplateError) as excinfo:
        iter_template_files([tmp_path, tmp_path / "nope", tmp_path / "gone.yaml"])
    assert [i.source for i in excinfo.value.issues] == [
        str(tmp_path / "nope"),
        str(tmp_path / "gone.yaml"),
    ]


def test_package_imports_without_django():
    code = (
        "import sys, tasker_django.definitions as d;"
        "assert not [m for m in sys.modules if m == 'django' or m.startswith('django.')], 'django';"
        "print(len(d.__all__))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={"PATH": "", "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "12"
