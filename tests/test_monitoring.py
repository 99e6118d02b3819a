"""Template metrics: handlers record declared metrics, the Prometheus endpoint exports them."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from tasker_django import StepHandler, create_task
from tasker_django.models import (
    MetricObservation,
    MetricSeries,
    StepStatus,
    TaskStatus,
    WorkflowStep,
)
from tasker_django.monitoring.declarations import (
    DEFAULT_BUCKETS,
    MetricDecl,
    parse_monitoring,
)
from tasker_django.monitoring.recording import MetricError, record
from tasker_django.testing import run_task_to_completion
from tests.conftest import ROOT, SEED_DIR, Workers

TEMPLATE = """
name: {name}
namespace: mon
version: "1.0.0"
monitoring:
  metrics:
    - name: payments_processed
      type: counter
      description: "Payments processed"
    - name: success_ratio
      type: gauge
      description: "Share of good payments"
    - name: charge_seconds
      type: histogram
      description: "Time to charge"
      buckets: [0.5, 1, 5]
    - name: never_recorded
      type: histogram
      buckets: [1, 2]
    - name: idle_gauge
      type: gauge
    - name: idle_counter
      type: counter
step_templates:
  - name: s
    handler_class: mon.recorder
    handler_config: {{records: {records}}}
"""


class Recorder(StepHandler, name="mon.recorder"):
    """Records ``config.records``: a list of [name, value, labels?, required?]."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        answers = []
        for entry in self.config.get("records", []):
            name, value, *rest = entry
            labels = rest[0] if rest else None
            required = rest[1] if len(rest) > 1 else True
            if value == "__default__":
                answers.append(self.record_metric(name, labels=labels, required=required))
            else:
                answers.append(self.record_metric(name, value, labels, required=required))
        return {"answers": answers}


def run(load_template: Any, records: list[Any], name: str = "mon_metrics") -> Any:
    load_template(TEMPLATE.format(name=name, records=json.dumps(records)))
    return run_task_to_completion(create_task(name, namespace="mon"))


def scrape() -> dict[str, Any]:
    client = APIClient()
    with override_settings(TASKER={"API_METRICS_PUBLIC": True}):
        response = client.get("/tasker/metrics/")
    assert response.status_code == 200
    text = response.content.decode()
    return {f.name: f for f in text_string_to_metric_families(text)} | {"__text__": text}


def samples(family: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


MON = (("namespace", "mon"), ("template", "mon_metrics"))


def lab(**extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((*MON, *extra.items())))


# -- recording and exporting ---------------------------------------------------------------


@pytest.mark.django_db
def test_exporter_shows_declared_metrics_with_types_buckets_and_values(
    load_template: Any,
) -> None:
    task = run(
        load_template,
        [
            ["payments_processed", 2],
            ["payments_processed", "__default__"],
            ["success_ratio", 0.7],
            ["success_ratio", 0.42],
            ["charge_seconds", 0.3],
            ["charge_seconds", 2],
            ["charge_seconds", 7],
        ],
    )
    assert task.status == TaskStatus.COMPLETE
    families = scrape()
    counter = families["tasker_template_payments_processed"]
    assert counter.type == "counter" and counter.documentation == "Payments processed"
    assert samples(counter)[("tasker_template_payments_processed_total", MON)] == 3.0
    gauge = families["tasker_template_success_ratio"]
    assert gauge.type == "gauge"
    assert samples(gauge) == {("tasker_template_success_ratio", MON): 0.42}
    hist = families["tasker_template_charge_seconds"]
    assert hist.type == "histogram"
    got = samples(hist)
    buckets = {
        dict(labels)["le"]: value
        for (name, labels), value in got.items()
        if name.endswith("_bucket")
    }
    assert buckets == {"0.5": 1, "1.0": 1, "5.0": 2, "+Inf": 3}
    assert got[("tasker_template_charge_seconds_count", MON)] == 3
    assert math.isclose(got[("tasker_template_charge_seconds_sum", MON)], 9.3)
    # The built-in metrics are still there.
    assert "tasker_step_attempts" in families


@pytest.mark.django_db
def test_declared_but_never_recorded_metrics_still_export(load_template: Any) -> None:
    run(load_template, [])
    families = scrape()
    text = families["__text__"]
    never = samples(families["tasker_template_never_recorded"])
    assert never[("tasker_template_never_recorded_count", MON)] == 0
    assert never[("tasker_template_never_recorded_bucket", lab(le="+Inf"))] == 0
    assert never[("tasker_template_never_recorded_bucket", lab(le="2.0"))] == 0
    assert samples(families["tasker_template_idle_counter"]) == {
        ("tasker_template_idle_counter_total", MON): 0.0
    }
    # A gauge nobody set has its HELP and TYPE but no sample (0 would be a lie).
    assert "# TYPE tasker_template_idle_gauge gauge" in text
    assert samples(families["tasker_template_idle_gauge"]) == {}


@pytest.mark.django_db
def test_labels_make_separate_series(load_template: Any) -> None:
    run(
        load_template,
        [
            ["payments_processed", 1, {"gateway": "stripe"}],
            ["payments_processed", 4, {"gateway": "adyen"}],
            ["payments_processed", 2, {"gateway": "stripe"}],
        ],
    )
    got = samples(scrape()["tasker_template_payments_processed"])
    name = "tasker_template_payments_processed_total"
    assert got[(name, lab(gateway="stripe"))] == 3
    assert got[(name, lab(gateway="adyen"))] == 4
    assert MetricSeries.objects.filter(name="payments_processed").count() == 2


@pytest.mark.django_db
def test_every_record_appends_an_observation(load_template: Any) -> None:
    run(load_template, [["payments_processed", 2], ["success_ratio", 0.5], ["charge_seconds", 1]])
    rows = list(
        MetricObservation.objects.order_by("id").values_list(
            "namespace", "template", "name", "value"
        )
    )
    assert rows == [
        ("mon", "mon_metrics", "payments_processed", 2.0),
        ("mon", "mon_metrics", "success_ratio", 0.5),
        ("mon", "mon_metrics", "charge_seconds", 1.0),
    ]


@pytest.mark.django_db
def test_seed_template_metrics_are_exported(load_template: Any) -> None:
    load_template((SEED_DIR / "payment_processing_task.yaml").read_text())
    families = scrape()
    hist = families["tasker_template_payment_processing_duration"]
    assert hist.type == "histogram"
    bounds = [
        dict(labels)["le"]
        for (name, labels), _v in samples(hist).items()
        if name.endswith("_bucket")
    ]
    assert bounds == ["0.1", "0.5", "1.0", "5.0", "10.0", "30.0", "+Inf"]
    assert families["tasker_template_payment_success_rate"].type == "gauge"
    assert families["tasker_template_notification_delivery_rate"].type == "gauge"


# -- refusals ------------------------------------------------------------------------------


def failed_step(task: Any) -> dict[str, Any]:
    """The last error of the task's only step, which failed for good on its first attempt."""
    step = WorkflowStep.objects.get(task=task)
    assert step.status == StepStatus.ERROR and step.attempts == 1  # permanent: no retry
    assert isinstance(step.last_error, dict)
    return step.last_error


@pytest.mark.django_db
def test_undeclared_metric_is_a_permanent_error(load_template: Any) -> None:
    error = failed_step(run(load_template, [["made_up", 1]]))
    assert error["error_code"] == "UNDECLARED_METRIC"
    assert "payments_processed" in error["message"]  # lists the declared ones
    assert not MetricObservation.objects.exists()


@pytest.mark.django_db
def test_undeclared_metric_not_required_is_skipped(load_template: Any) -> None:
    task = run(load_template, [["made_up", 1, None, False], ["success_ratio", 1, None, False]])
    assert task.status == TaskStatus.COMPLETE
    step = WorkflowStep.objects.get(task=task)
    assert step.results["answers"] == [False, True]
    assert list(MetricObservation.objects.values_list("name", flat=True)) == ["success_ratio"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "value", "labels", "code"),
    [
        ("success_ratio", "fast", None, "INVALID_METRIC_VALUE"),
        ("success_ratio", True, None, "INVALID_METRIC_VALUE"),
        ("charge_seconds", None, None, "INVALID_METRIC_VALUE"),
        ("payments_processed", -1, None, "INVALID_METRIC_VALUE"),
        ("success_ratio", 1, {"le": "x"}, "INVALID_METRIC_LABELS"),
        ("success_ratio", 1, {"bad name": "x"}, "INVALID_METRIC_LABELS"),
        ("success_ratio", 1, ["not", "a", "dict"], "INVALID_METRIC_LABELS"),
    ],
)
def test_bad_values_and_labels_are_refused(
    load_template: Any, name: str, value: Any, labels: Any, code: str
) -> None:
    error = failed_step(run(load_template, [[name, value, labels]]))
    assert error["error_code"] == code
    assert not MetricSeries.objects.filter(name=name, count__gt=0).exists()
    assert not MetricObservation.objects.exists()


def test_non_finite_values_are_refused() -> None:
    decl = MetricDecl("g", "gauge")
    with pytest.raises(MetricError) as caught:
        record("mon", "t", decl, float("nan"))
    assert caught.value.code == "INVALID_METRIC_VALUE"


def test_record_metric_outside_tasker_is_a_clear_error() -> None:
    class Lone(StepHandler, register=False):
        def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
            return {}

    with pytest.raises(RuntimeError, match="only available"):
        Lone().record_metric("x", 1)


# -- declarations --------------------------------------------------------------------------


def test_declarations_skip_what_cannot_work() -> None:
    parsed = parse_monitoring(
        {
            "sections": {
                "monitoring": {
                    "metrics": [
                        {"name": "ok_hist", "type": "Histogram"},
                        {"name": "bad-name", "type": "gauge"},
                        {"name": "no_type"},
                        {"name": "bad_buckets", "type": "histogram", "buckets": [5, 1]},
                        {"name": "ok_hist", "type": "gauge"},
                    ],
                    "alerts": [
                        {"name": "broken", "condition": "x >"},
                        {"name": "fine", "condition": "ok_hist > 3s"},
                    ],
                }
            }
        }
    )
    assert list(parsed.metrics) == ["ok_hist"]
    assert parsed.metrics["ok_hist"].buckets == DEFAULT_BUCKETS
    paths = [path for path, _msg in parsed.problems]
    assert paths == [
        "monitoring.metrics[1].name",
        "monitoring.metrics[2].type",
        "monitoring.metrics[3].buckets",
        "monitoring.metrics[4].name",
        "monitoring.alerts[0].condition",
    ]
    assert parsed.alerts["broken"].condition is None
    assert parsed.alerts["fine"].condition is not None
    assert parsed.alerts["fine"].condition.evaluate({"ok_hist": 3.5})


@pytest.mark.django_db
def test_changed_declaration_restarts_the_series(load_template: Any) -> None:
    run(load_template, [["charge_seconds", 0.3]])
    changed = TEMPLATE.replace("buckets: [0.5, 1, 5]", "buckets: [10, 20]")
    load_template(changed.format(name="mon_metrics", records=json.dumps([["charge_seconds", 15]])))
    run_task_to_completion(create_task("mon_metrics", namespace="mon"))
    row = MetricSeries.objects.get(name="charge_seconds")
    assert (row.buckets, row.bucket_counts, row.count, row.sum) == ([10.0, 20.0], [0, 1], 1, 15.0)


# -- concurrency ---------------------------------------------------------------------------

SCRIPT = """
import os, sys, time
import django
django.setup()
from tasker_django.monitoring.declarations import MetricDecl
from tasker_django.monitoring.recording import record
counter = MetricDecl("hits", "counter")
hist = MetricDecl("lat", "histogram", buckets=(1.0, 2.0))
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.01)
for i in range(int(sys.argv[2])):
    record("mon", "race", counter, 1)
    record("mon", "race", hist, 0.5 if i % 2 else 1.5)
print("done")
"""


@pytest.mark.django_db(transaction=True)
def test_counter_and_histogram_updates_are_atomic_across_processes(tmp_path: Path) -> None:
    n = 150
    go = tmp_path / "go"
    env = Workers(tmp_path).env()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, str(go), str(n)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    time.sleep(1.0)  # both processes set up Django and wait at the barrier
    go.write_text("go")
    outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    hits = MetricSeries.objects.get(template="race", name="hits")
    assert hits.value == 2 * n
    lat = MetricSeries.objects.get(template="race", name="lat")
    assert lat.count == 2 * n and lat.bucket_counts == [n, n]
    assert math.isclose(lat.sum, n * 0.5 + n * 1.5)
    assert MetricObservation.objects.filter(template="race").count() == 4 * n


# -- the example project's handlers ----------------------------------------------------------

SEED_CONTEXT = {
    "order_id": 1,
    "customer_id": 7,
    "amount": 42.5,
    "currency": "USD",
    "payment_info": {"amount": 42.5, "currency": "USD", "card_token": "tok_1234567890"},
}


#: The seed's payment_workflow encrypts its data at rest: the tests give it a key.
TEST_KEY = base64.b64encode(bytes(range(50, 82))).decode()


@pytest.mark.django_db
def test_example_handlers_record_the_seed_metrics(load_template: Any, settings: Any) -> None:
    settings.TASKER = {**settings.TASKER, "ENCRYPTION_KEYS": [TEST_KEY]}
    for name in ("payment_processing_task.yaml", "payment_workflow.yaml"):
        load_template((SEED_DIR / name).read_text())
    for name, namespace, method in (
        ("payment_processing_workflow", "payment_processing", "credit_card"),
        ("payment_workflow", "default", "card"),
    ):
        context = {**SEED_CONTEXT, "payment_method": method}
        task = run_task_to_completion(create_task(name, namespace=namespace, context=context))
        assert task.status == TaskStatus.COMPLETE, list(task.steps.values("name", "last_error"))
    seen = set(MetricObservation.objects.values_list("template", "name"))
    assert {
        ("payment_processing_workflow", "payment_processing_duration"),
        ("payment_processing_workflow", "payment_success_rate"),
        ("payment_processing_workflow", "notification_delivery_rate"),
        ("payment_workflow", "step_execution_time"),
        ("payment_workflow", "step_success_rate"),
        ("payment_workflow", "payment_processing_volume"),
    } <= seen
    # Nothing undeclared was recorded (the handlers pass required=False).
    assert ("payment_processing_workflow", "step_execution_time") not in seen
    rate = MetricSeries.objects.get(
        template="payment_processing_workflow", name="payment_success_rate"
    )
    assert rate.value == 1.0
    volume = MetricSeries.objects.get(template="payment_workflow", name="payment_processing_volume")
    assert volume.value == 1.0
    steps = MetricSeries.objects.get(template="payment_workflow", name="step_execution_time")
    assert steps.count == 5  # one observation per step of the workflow


@pytest.mark.django_db
def test_example_handlers_record_failed_payments_too(load_template: Any) -> None:
    load_template((SEED_DIR / "payment_processing_task.yaml").read_text())
    ok = {**SEED_CONTEXT, "payment_method": "credit_card"}
    run_task_to_completion(
        create_task("payment_processing_workflow", "payment_processing", context=ok)
    )
    too_much = {**ok, "amount": 50_000, "payment_info": {**ok["payment_info"], "amount": 50_000}}
    task = run_task_to_completion(
        create_task("payment_processing_workflow", "payment_processing", context=too_much)
    )
    assert task.status == TaskStatus.ERROR
    rates = list(
        MetricObservation.objects.filter(name="payment_success_rate")
        .order_by("id")
        .values_list("value", flat=True)
    )
    assert rates == [1.0, 0.5]  # the failed attempt counts: 1 of 2 succeeded
    durations = MetricObservation.objects.filter(name="payment_processing_duration")
    assert durations.count() == 2
