"""Template alerts: evaluation over a window, firing/resolving with signals, the command,
the schedule, pruning, the admin, the API and the system checks W008/W009."""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client, override_settings
from django_q.models import Schedule

from tasker_django import create_task
from tasker_django.checks import check_monitoring, check_monitoring_settings
from tasker_django.engine import clock
from tasker_django.models import Alert, AlertStatus, MetricObservation
from tasker_django.monitoring.alerts import (
    SCHEDULE_FUNC,
    SCHEDULE_NAME,
    evaluate_alerts,
    scheduled_evaluation,
)
from tasker_django.monitoring.declarations import MetricDecl
from tasker_django.monitoring.recording import record
from tasker_django.monitoring.values import builtin_values, p95, window_values
from tasker_django.signals import alert_fired, alert_resolved
from tasker_django.testing import FakeClock, run_task_to_completion
from tests.api_support import client_for, make_user
from tests.conftest import ROOT, SEED_DIR, Workers, wait_for

pytestmark = pytest.mark.django_db

TEMPLATE = """
name: {name}
namespace: mon
version: "1.0.0"
monitoring:
  metrics:
    - name: ratio
      type: gauge
    - name: volume
      type: counter
    - name: latency
      type: histogram
      buckets: [1, 10]
    - name: step_success_rate
      type: gauge
  alerts:
    - name: low_ratio
      condition: "ratio < 0.5"
      severity: critical
      description: "<script>alert('x')</script> ratio is low"
    - name: busy
      condition: "volume > 5"
    - name: slow
      condition: "latency > 2s"
{extra_alerts}
step_templates:
  - name: pay
    handler_class: test.flaky
    handler_config: {{fail_times: 1}}
"""

RATIO = MetricDecl("ratio", "gauge")
VOLUME = MetricDecl("volume", "counter")
LATENCY = MetricDecl("latency", "histogram", buckets=(1.0, 10.0))
DECLARED = {d.name: d for d in (RATIO, VOLUME, LATENCY, MetricDecl("step_success_rate", "gauge"))}


@pytest.fixture
def fake() -> Any:
    fake = FakeClock()
    with clock.frozen(fake.now):
        yield fake


@pytest.fixture
def template(load_template: Any) -> Any:
    return load_template(TEMPLATE.format(name="mon_alerts", extra_alerts=""))


class Captured:
    def __init__(self) -> None:
        self.fired: list[dict[str, Any]] = []
        self.resolved: list[dict[str, Any]] = []

    def on_fired(self, sender: Any, alert: Alert, event: dict[str, Any], **kw: Any) -> None:
        assert sender is Alert and alert.pk == event["alert_id"]
        self.fired.append(event)

    def on_resolved(self, sender: Any, alert: Alert, event: dict[str, Any], **kw: Any) -> None:
        self.resolved.append(event)


@pytest.fixture
def captured() -> Any:
    c = Captured()
    alert_fired.connect(c.on_fired)
    alert_resolved.connect(c.on_resolved)
    try:
        yield c
    finally:
        alert_fired.disconnect(c.on_fired)
        alert_resolved.disconnect(c.on_resolved)


def evaluate(capture: Any, **kwargs: Any) -> dict[str, str]:
    with capture(execute=True):
        report = evaluate_alerts(namespace="mon", **kwargs)
    return {r.name: r.outcome for r in report.results}


# -- firing, staying single, resolving -----------------------------------------------------


def test_alert_fires_stays_single_and_resolves_with_signals(
    template: Any, fake: FakeClock, captured: Captured, django_capture_on_commit_callbacks: Any
) -> None:
    record("mon", "mon_alerts", RATIO, 0.2)
    fake.advance(10)
    outcomes = evaluate(django_capture_on_commit_callbacks)
    assert outcomes["low_ratio"] == "fired"
    alert = Alert.objects.get(name="low_ratio")
    assert (alert.status, alert.severity, alert.namespace, alert.template) == (
        "firing",
        "critical",
        "mon",
        "mon_alerts",
    )
    assert alert.values == {"ratio": 0.2} and alert.named_task_id == template.pk
    assert alert.condition == "ratio < 0.5" and "ratio is low" in alert.description
    assert [e["name"] for e in captured.fired] == ["low_ratio"]

    fake.advance(30)
    record("mon", "mon_alerts", RATIO, 0.3)
    assert evaluate(django_capture_on_commit_callbacks)["low_ratio"] == "firing"
    assert Alert.objects.filter(name="low_ratio").count() == 1
    alert.refresh_from_db()
    assert alert.last_evaluated_at == fake.now() and alert.values == {"ratio": 0.3}
    assert len(captured.fired) == 1  # no second signal while it keeps firing

    fake.advance(30)
    record("mon", "mon_alerts", RATIO, 0.9)
    assert evaluate(django_capture_on_commit_callbacks)["low_ratio"] == "resolved"
    alert.refresh_from_db()
    assert alert.status == AlertStatus.RESOLVED and alert.resolved_at == fake.now()
    assert [e["name"] for e in captured.resolved] == ["low_ratio"]
    assert captured.resolved[0]["status"] == "resolved"

    fake.advance(30)
    record("mon", "mon_alerts", RATIO, 0.1)
    assert evaluate(django_capture_on_commit_callbacks)["low_ratio"] == "fired"
    assert Alert.objects.filter(name="low_ratio").count() == 2  # the history keeps the old row
    assert Alert.objects.filter(name="low_ratio", status="firing").count() == 1
    assert len(captured.fired) == 2


def test_signals_wait_for_the_commit(
    template: Any, fake: FakeClock, captured: Captured, django_capture_on_commit_callbacks: Any
) -> None:
    record("mon", "mon_alerts", RATIO, 0.2)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        evaluate_alerts(namespace="mon")
    assert captured.fired == [] and len(callbacks) == 1
    callbacks[0]()
    assert len(captured.fired) == 1


def test_a_failing_receiver_does_not_stop_the_others(
    template: Any,
    fake: FakeClock,
    captured: Captured,
    caplog: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    alert_fired.disconnect(captured.on_fired)
    alert_fired.connect(broken)  # called first
    alert_fired.connect(captured.on_fired)
    try:
        record("mon", "mon_alerts", RATIO, 0.2)
        with caplog.at_level("ERROR", logger="tasker_django.alerts"):
            evaluate(django_capture_on_commit_callbacks)
    finally:
        alert_fired.disconnect(broken)
    assert [e["name"] for e in captured.fired] == ["low_ratio"]
    assert "a receiver of alert_fired failed" in caplog.text


def test_transitions_are_logged(
    template: Any, fake: FakeClock, caplog: Any, django_capture_on_commit_callbacks: Any
) -> None:
    record("mon", "mon_alerts", RATIO, 0.2)
    with caplog.at_level("INFO", logger="tasker_django.alerts"):
        evaluate(django_capture_on_commit_callbacks)
        record("mon", "mon_alerts", RATIO, 0.8)
        fake.advance(1)
        evaluate(django_capture_on_commit_callbacks)
    lines = [r.getMessage() for r in caplog.records if r.name == "tasker_django.alerts"]
    assert any(
        line.startswith("alert fired: critical mon/mon_alerts (low_ratio)") for line in lines
    )
    assert any(
        line.startswith("alert resolved: critical mon/mon_alerts (low_ratio)") for line in lines
    )


# -- the window ----------------------------------------------------------------------------


def test_values_older_than_the_window_are_ignored(
    template: Any, fake: FakeClock, django_capture_on_commit_callbacks: Any
) -> None:
    record("mon", "mon_alerts", RATIO, 0.2)
    fake.advance(301)
    assert evaluate(django_capture_on_commit_callbacks, window=300)["low_ratio"] == "no data"
    assert not Alert.objects.exists()
    assert evaluate(django_capture_on_commit_callbacks, window=400)["low_ratio"] == "fired"


def test_no_data_keeps_a_firing_alert_firing(
    template: Any, fake: FakeClock, captured: Captured, django_capture_on_commit_callbacks: Any
) -> None:
    record("mon", "mon_alerts", RATIO, 0.2)
    evaluate(django_capture_on_commit_callbacks, window=60)
    fake.advance(120)
    result = evaluate(django_capture_on_commit_callbacks, window=60)
    assert result["low_ratio"] == "no data"
    alert = Alert.objects.get(name="low_ratio")
    assert alert.status == "firing" and alert.last_evaluated_at == fake.now()
    assert captured.resolved == []


def test_counter_is_its_increase_and_histogram_its_p95_in_the_window(
    template: Any, fake: FakeClock
) -> None:
    record("mon", "mon_alerts", VOLUME, 3)
    for value in range(1, 21):
        record("mon", "mon_alerts", LATENCY, float(value))
    fake.advance(200)
    record("mon", "mon_alerts", VOLUME, 4)
    values = window_values("mon", "mon_alerts", DECLARED, 300, fake.now())
    assert values["volume"] == 7 and values["latency"] == 19.0
    fake.advance(150)  # the first records leave the window
    values = window_values("mon", "mon_alerts", DECLARED, 300, fake.now())
    assert values["volume"] == 4 and "latency" not in values


def test_p95_is_nearest_rank() -> None:
    assert p95([3.0]) == 3.0
    assert p95([float(v) for v in range(1, 11)]) == 10.0  # fewer than 20: the largest
    assert p95([float(v) for v in range(100, 0, -1)]) == 95.0


def test_builtin_values_from_attempts_and_tasks(template: Any, fake: FakeClock) -> None:
    for _ in range(2):
        run_task_to_completion(create_task("mon_alerts", namespace="mon"), clock=fake)
    values = builtin_values("mon", "mon_alerts", fake.now() - timedelta(hours=1), fake.now())
    # test.flaky fails its first attempt: 4 attempts, 2 successes, 2 retries.
    assert values["step_attempts"] == 4 and values["step_success_rate"] == 0.5
    assert values["step_error_rate"] == 0.5
    assert values["retry_count"] == values["retries"] == 2
    assert values["pay_success_rate"] == 0.5 and values["pay_retries"] == 2
    assert values["pay_attempts"] == 4 and values["pay_duration"] >= 0
    assert values["step_execution_time"] >= 0
    assert values["workflow_completion_rate"] == 1.0 and values["tasks_finished"] == 2
    assert values["task_duration"] >= 0
    later = builtin_values("mon", "mon_alerts", fake.now(), fake.now() + timedelta(hours=1))
    assert "step_success_rate" not in later and later["retry_count"] == 0


def test_declared_metric_with_a_builtin_name_falls_back_to_the_builtin(
    template: Any, fake: FakeClock
) -> None:
    run_task_to_completion(create_task("mon_alerts", namespace="mon"), clock=fake)
    values = window_values("mon", "mon_alerts", DECLARED, 300, fake.now())
    assert values["step_success_rate"] == 0.5  # nothing recorded: the built-in
    record("mon", "mon_alerts", DECLARED["step_success_rate"], 0.99)
    values = window_values("mon", "mon_alerts", DECLARED, 300, fake.now())
    assert values["step_success_rate"] == 0.99  # recorded: the declared metric


def test_builtin_step_metrics_fire_alerts(
    load_template: Any, fake: FakeClock, django_capture_on_commit_callbacks: Any
) -> None:
    extra = (
        "    - name: pay_unreliable\n"
        '      condition: "pay_success_rate < 0.9 AND retry_count >= 1"\n'
        "    - name: fine\n"
        '      condition: "workflow_completion_rate < 1"\n'
    )
    load_template(TEMPLATE.format(name="mon_builtin", extra_alerts=extra))
    run_task_to_completion(create_task("mon_builtin", namespace="mon"), clock=fake)
    outcomes = evaluate(django_capture_on_commit_callbacks, template="mon_builtin")
    assert outcomes == {
        "low_ratio": "no data",
        "busy": "no data",
        "slow": "no data",
        "pay_unreliable": "fired",
        "fine": "ok",
    }
    alert = Alert.objects.get(name="pay_unreliable")
    assert alert.values == {"pay_success_rate": 0.5, "retry_count": 1.0}


def test_alerts_no_longer_declared_are_resolved(
    template: Any, fake: FakeClock, captured: Captured, django_capture_on_commit_callbacks: Any
) -> None:
    Alert.objects.create(
        namespace="mon", template="mon_alerts", name="removed_rule", condition="x > 1"
    )
    outcomes = evaluate(django_capture_on_commit_callbacks)
    assert outcomes["removed_rule"] == "resolved"
    assert Alert.objects.get(name="removed_rule").status == "resolved"
    assert [e["name"] for e in captured.resolved] == ["removed_rule"]


# -- pruning, the command, the schedule ----------------------------------------------------


def test_old_observations_are_pruned(template: Any, fake: FakeClock) -> None:
    record("mon", "mon_alerts", RATIO, 0.9)
    fake.advance(601)
    record("mon", "mon_alerts", RATIO, 0.8)
    with override_settings(TASKER={"ALERT_WINDOW": 300}):
        report = evaluate_alerts(window=60)  # the setting's window is larger: 2 x 300 kept
    assert report.pruned == 1
    assert list(MetricObservation.objects.values_list("value", flat=True)) == [0.8]


def test_command_prints_a_table(
    template: Any, fake: FakeClock, django_capture_on_commit_callbacks: Any
) -> None:
    record("mon", "mon_alerts", RATIO, 0.2)
    record("mon", "mon_alerts", VOLUME, 9)
    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "tasker_evaluate_alerts", "--window", "300", "--template", "mon/mon_alerts", stdout=out
        )
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].split() == ["template", "alert", "severity", "status", "values"]
    row = next(line for line in lines if " low_ratio " in line)
    assert row.split()[:4] == ["mon/mon_alerts", "low_ratio", "critical", "fired"]
    assert "ratio=0.2" in row
    assert "volume=9" in next(line for line in lines if " busy " in line)
    assert "latency=-" in next(line for line in lines if " slow " in line)
    assert "3 alert(s) evaluated over 300 s: 2 fired" in text
    assert Alert.objects.filter(status="firing").count() == 2


def test_command_refuses_a_bad_window(template: Any) -> None:
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="positive"):
        call_command("tasker_evaluate_alerts", "--window", "0", stdout=StringIO())


def test_install_schedules_is_idempotent() -> None:
    out = StringIO()
    call_command("tasker_install_schedules", stdout=out)
    call_command("tasker_install_schedules", stdout=out)
    assert out.getvalue().splitlines() == [
        f"schedule {SCHEDULE_NAME}: created (every 1 min, {SCHEDULE_FUNC})",
        f"schedule {SCHEDULE_NAME}: unchanged (every 1 min, {SCHEDULE_FUNC})",
    ]
    schedule = Schedule.objects.get(name=SCHEDULE_NAME)
    assert (schedule.func, schedule.schedule_type, schedule.repeats) == (
        SCHEDULE_FUNC,
        Schedule.MINUTES,
        -1,
    )
    with override_settings(TASKER={"ALERT_INTERVAL": 150}):
        call_command("tasker_install_schedules", stdout=out)
    assert (
        out.getvalue()
        .splitlines()[-1]
        .startswith(f"schedule {SCHEDULE_NAME}: updated (every 3 min")
    )
    assert Schedule.objects.filter(name=SCHEDULE_NAME).count() == 1
    call_command("tasker_install_schedules", "--remove", stdout=out)
    assert not Schedule.objects.filter(name=SCHEDULE_NAME).exists()


def test_scheduled_function_evaluates_with_the_setting_window(
    template: Any, fake: FakeClock, django_capture_on_commit_callbacks: Any
) -> None:
    record("mon", "mon_alerts", RATIO, 0.2)
    fake.advance(100)
    with (
        override_settings(TASKER={"ALERT_WINDOW": 50}),
        django_capture_on_commit_callbacks(execute=True),
    ):
        summary = scheduled_evaluation()
    assert "over 50 s: 0 fired" in summary and not Alert.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        summary = scheduled_evaluation()  # default window 300
    assert "1 fired" in summary


# -- admin and API -------------------------------------------------------------------------


@pytest.fixture
def firing_alert(template: Any, fake: FakeClock, django_capture_on_commit_callbacks: Any) -> Alert:
    record("mon", "mon_alerts", RATIO, 0.2)
    record("mon", "mon_alerts", VOLUME, 9)
    evaluate(django_capture_on_commit_callbacks)
    record("mon", "mon_alerts", VOLUME, 0)
    fake.advance(400)
    record("mon", "mon_alerts", RATIO, 0.25)
    evaluate(django_capture_on_commit_callbacks)  # busy: no data, stays firing
    return Alert.objects.get(name="low_ratio")


def test_admin_lists_alerts_with_badges_and_escaped_values(
    firing_alert: Alert, django_user_model: Any
) -> None:
    user = django_user_model.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(user)
    response = client.get("/admin/tasker_django/alert/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'class="tasker-badge tasker-severity-critical"' in html
    assert "tasker-status-firing" in html and "ratio=0.25" in html
    response = client.get("/admin/tasker_django/alert/?status__exact=firing&severity=critical")
    assert "low_ratio" in response.content.decode() and "busy" not in response.content.decode()
    page = client.get(f"/admin/tasker_django/alert/{firing_alert.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "<script>alert(" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; ratio is low" in html
    assert "Save" not in html  # read-only


def test_admin_needs_the_view_permission(firing_alert: Alert, django_user_model: Any) -> None:
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get("/admin/tasker_django/alert/").status_code == 403


def test_api_lists_and_filters_alerts(firing_alert: Alert, settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    client = client_for(make_user("watcher", ["view_alert"]))
    body = client.get("/tasker/alerts/").json()
    names = sorted(a["name"] for a in body["results"])
    assert names == ["busy", "low_ratio"]
    one = client.get("/tasker/alerts/?severity=critical&status=firing&namespace=mon").json()
    assert [a["name"] for a in one["results"]] == ["low_ratio"]
    row = one["results"][0]
    assert row["values"] == {"ratio": 0.25} and row["version"] == "1.0.0"
    assert row["template"] == "mon_alerts" and row["resolved_at"] is None
    assert client.get("/tasker/alerts/?namespace=other").json()["results"] == []
    detail = client.get(f"/tasker/alerts/{firing_alert.pk}/")
    assert detail.status_code == 200 and detail.json()["id"] == firing_alert.pk
    assert client.get("/tasker/alerts/999999/").status_code == 404
    assert client.get("/tasker/alerts/abc/").status_code == 404
    assert client.get("/tasker/alerts/?status=burning").status_code == 400


def test_api_refuses_without_permission(firing_alert: Alert, settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    assert client_for(make_user("nobody", ["view_task"])).get("/tasker/alerts/").status_code == 403
    assert client_for(None).get("/tasker/alerts/").status_code == 401


# -- system checks -------------------------------------------------------------------------


def test_w008_names_template_alert_and_unknown_metric(load_template: Any) -> None:
    extra = '    - name: typo\n      condition: "payment_sucess_rate < 0.9 OR pay_duration > 3"\n'
    load_template(TEMPLATE.format(name="mon_typo", extra_alerts=extra))
    messages = check_monitoring(databases=["default"])
    w008 = [m for m in messages if m.id == "tasker_django.W008"]
    assert len(w008) == 1
    assert "mon/mon_typo" in w008[0].msg and "'typo'" in w008[0].msg
    assert "'payment_sucess_rate'" in w008[0].msg and "pay_duration" not in w008[0].msg


def test_seed_templates_have_no_monitoring_warnings(load_template: Any) -> None:
    for path in sorted(SEED_DIR.glob("*.yaml")):
        load_template(path.read_text())
    assert check_monitoring(databases=["default"]) == []


def test_w009_reports_bad_declarations_and_type_conflicts(load_template: Any) -> None:
    bad = TEMPLATE.format(name="mon_bad", extra_alerts="").replace(
        "    - name: volume\n      type: counter\n",
        "    - name: volume\n      type: gauge\n    - name: broken\n      type: summary\n",
    )
    load_template(TEMPLATE.format(name="mon_alerts", extra_alerts=""))
    load_template(bad)
    messages = [
        m.msg for m in check_monitoring(databases=["default"]) if m.id == "tasker_django.W009"
    ]
    assert any("mon/mon_bad@1.0.0: monitoring.metrics[2].type" in m for m in messages)
    assert any("metric 'volume' is a gauge" in m and "mon/mon_alerts" in m for m in messages)


def test_w009_reports_bad_alert_settings() -> None:
    with override_settings(
        TASKER={"ALERT_WINDOW": -5, "ALERT_INTERVAL": "1m", "ALERT_SCHEDULE": 1}
    ):
        messages = check_monitoring_settings()
    assert [m.id for m in messages] == ["tasker_django.W009"] * 3
    assert "ALERT_WINDOW" in messages[0].msg and "ALERT_SCHEDULE" in messages[2].msg
    with override_settings(TASKER={"ALERT_WINDOW": 600, "ALERT_SCHEDULE": True}):
        assert check_monitoring_settings() == []


@pytest.mark.django_db(transaction=True)
def test_worker_installs_the_schedule_when_alert_schedule_is_on(tmp_path: Any) -> None:
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "tasker_worker",
                "--no-cluster",
                "--settings=tests.settings_mon",
            ],
            cwd=ROOT,
            env=Workers(tmp_path).env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: b"sweeping every" in log.read_bytes() or proc.poll() is not None, 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert "tasker worker: alert schedule created (every 2 min)" in log.read_text()
    schedule = Schedule.objects.get(name=SCHEDULE_NAME)
    assert (schedule.func, schedule.minutes) == (SCHEDULE_FUNC, 2)
