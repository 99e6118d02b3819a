"""Management commands: success and error paths (``call_command``, tasks driven inline)."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from tasker_django import create_task
from tasker_django.models import StepStatus, Task, TaskEvent, TaskStatus, WorkflowStep
from tasker_django.testing import run_task_to_completion

from .conftest import Workers, chain_yaml

pytestmark = pytest.mark.django_db

FAILING = """
name: cmd_failing
version: "1.0.0"
step_templates:
  - {name: pay, handler_class: test.permanent}
  - {name: notify, handler_class: test.echo, depends_on_step: pay}
"""

WITH_SCHEMA = """
name: cmd_schema
version: "1.0.0"
schema:
  type: object
  required: [amount]
  properties:
    amount: {type: integer, minimum: 1}
step_templates:
  - {name: only, handler_class: test.echo}
"""


class Result:
    def __init__(self, out: str, err: str) -> None:
        self.out = out
        self.err = err

    @property
    def last_line(self) -> str:
        return self.out.strip().splitlines()[-1]


def run(name: str, *args: Any, **options: Any) -> Result:
    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err, **options)
    return Result(out.getvalue(), err.getvalue())


def run_error(name: str, *args: Any, match: str) -> tuple[CommandError, Result]:
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match=match) as info:
        call_command(name, *args, stdout=out, stderr=err)
    return info.value, Result(out.getvalue(), err.getvalue())


def created_id(result: Result) -> int:
    match = re.search(r"task (\d+) created \((\d+) steps\)", result.out)
    assert match, result.out
    return int(match.group(1))


def failed_task(load_template: Any) -> Task:
    load_template(FAILING)
    task = run_task_to_completion(create_task("cmd_failing"))
    assert task.status == TaskStatus.ERROR
    return task


def step(task: Task, name: str) -> WorkflowStep:
    return WorkflowStep.objects.get(task=task, name=name)


# -- tasker_create_task ---------------------------------------------------------------------


def test_create_task_success(load_template: Any) -> None:
    load_template(chain_yaml("cmd_chain", 3, handler="test.echo"))
    result = run(
        "tasker_create_task",
        "default",
        "cmd_chain",
        "--context",
        '{"value": 3}',
        "--tags",
        '["cli"]',
        "--initiator",
        "alice",
        "--reason",
        "testing",
        "--priority",
        "2",
    )
    task = Task.objects.get(pk=created_id(result))
    assert result.out.strip() == f"task {task.pk} created (3 steps)"
    assert task.context == {"value": 3}
    assert task.tags == ["cli"]
    assert (task.initiator, task.source_system, task.reason, task.priority) == (
        "alice",
        "manage.py",
        "testing",
        2,
    )
    task = run_task_to_completion(task)
    assert task.status == TaskStatus.COMPLETE
    assert step(task, "s2").results["value"] == 3


def test_create_task_context_from_file_and_version(load_template: Any, tmp_path: Path) -> None:
    load_template(chain_yaml("cmd_ver", 1))
    load_template(chain_yaml("cmd_ver", 2).replace("1.0.0", "2.0.0"))
    path = tmp_path / "context.json"
    path.write_text('{"from_file": true}')
    # NB: the option cannot be --version, which every Django command already defines
    # (argparse conflict; see the bug report).
    result = run(
        "tasker_create_task",
        "default",
        "cmd_ver",
        "--template-version",
        "1.0.0",
        "--context",
        f"@{path}",
    )
    task = Task.objects.get(pk=created_id(result))
    assert task.context == {"from_file": True}
    assert task.named_task.version == "1.0.0" and task.total_steps == 1


def test_create_task_idempotency_key(load_template: Any) -> None:
    load_template(chain_yaml("cmd_idem", 1))
    first = created_id(run("tasker_create_task", "default", "cmd_idem", "--idempotency-key", "k1"))
    again = created_id(run("tasker_create_task", "default", "cmd_idem", "--idempotency-key", "k1"))
    assert first == again
    assert Task.objects.count() == 1


def test_create_task_bad_json_context(load_template: Any) -> None:
    load_template(chain_yaml("cmd_json", 1))
    run_error(
        "tasker_create_task",
        "default",
        "cmd_json",
        "--context",
        "{value: 3",
        match="--context is not valid JSON",
    )
    run_error(
        "tasker_create_task",
        "default",
        "cmd_json",
        "--tags",
        "[1,",
        match="--tags is not valid JSON",
    )
    assert not Task.objects.exists()


def test_create_task_missing_context_file(load_template: Any, tmp_path: Path) -> None:
    load_template(chain_yaml("cmd_file", 1))
    missing = tmp_path / "missing.json"
    run_error(
        "tasker_create_task",
        "default",
        "cmd_file",
        "--context",
        f"@{missing}",
        match=f"cannot read --context file {re.escape(str(missing))}",
    )


def test_create_task_context_not_an_object(load_template: Any) -> None:
    load_template(chain_yaml("cmd_list", 1))
    run_error(
        "tasker_create_task", "default", "cmd_list", "--context", "[1, 2]", match="JSON object"
    )
    assert not Task.objects.exists()


def test_create_task_unknown_template(load_template: Any) -> None:
    load_template(chain_yaml("cmd_known", 1))
    run_error(
        "tasker_create_task", "default", "cmd_unknown", match="No task template default/cmd_unknown"
    )
    run_error(
        "tasker_create_task",
        "default",
        "cmd_known",
        "--template-version",
        "9.9.9",
        match="Loaded versions: 1.0.0",
    )
    run_error("tasker_create_task", "elsewhere", "cmd_known", match="elsewhere/cmd_known")


def test_create_task_schema_errors_list_every_path(load_template: Any) -> None:
    load_template(WITH_SCHEMA)
    error, _ = run_error(
        "tasker_create_task",
        "default",
        "cmd_schema",
        "--context",
        '{"amount": 0}',
        match="does not match the schema",
    )
    assert "$.amount" in str(error)
    error, _ = run_error("tasker_create_task", "default", "cmd_schema", match="does not match")
    assert "'amount' is a required property" in str(error)
    assert not Task.objects.exists()
    assert created_id(
        run("tasker_create_task", "default", "cmd_schema", "--context", '{"amount": 5}')
    )


def test_create_task_wait_times_out_without_workers(load_template: Any) -> None:
    load_template(chain_yaml("cmd_wait", 1))
    started = time.monotonic()
    error, result = run_error(
        "tasker_create_task",
        "default",
        "cmd_wait",
        "--wait",
        "--timeout",
        "0.3",
        match=r"still (pending|in_progress) after 0\.3 s",
    )
    assert time.monotonic() - started < 10
    assert re.search(r"task \d+ created", result.out)


@pytest.mark.workers
def test_create_task_wait_completes_on_a_real_worker(workers: Workers, load_template: Any) -> None:
    load_template(chain_yaml("cmd_wait_ok", 3))
    workers.start(1)
    result = run("tasker_create_task", "default", "cmd_wait_ok", "--wait", "--timeout", "60")
    task_id = created_id(result)
    assert result.last_line == f"task {task_id} complete", workers.output()[-3000:]
    task = Task.objects.get(pk=task_id)
    assert task.status == TaskStatus.COMPLETE and task.completed_steps == 3


@pytest.mark.workers
def test_create_task_wait_permanent_failure_is_a_command_error(
    workers: Workers, load_template: Any
) -> None:
    load_template(chain_yaml("cmd_wait_fail", 2, handler="test.permanent"))
    workers.start(1)
    out = io.StringIO()
    with pytest.raises(
        CommandError, match=r"task (\d+) ended error; see `manage.py tasker_task \1`"
    ):
        call_command(
            "tasker_create_task",
            "default",
            "cmd_wait_fail",
            "--wait",
            "--timeout",
            "60",
            stdout=out,
            stderr=io.StringIO(),
        )
    task = Task.objects.get()
    assert out.getvalue().strip().splitlines()[-1] == f"task {task.pk} error"
    assert step(task, "s0").status == StepStatus.ERROR
    assert step(task, "s0").last_error["error_code"] == "CARD_DECLINED"


# -- tasker_task ----------------------------------------------------------------------------


def test_task_shows_steps_statuses_and_waiting_reasons(load_template: Any) -> None:
    load_template(chain_yaml("cmd_show", 3))
    task = create_task("cmd_show")
    out = run("tasker_task", str(task.pk)).out
    lines = out.splitlines()
    assert lines[0].startswith(f"task {task.pk}  default/cmd_show@1.0.0  pending")
    assert "steps 0/3 done, 0 failed" in lines[1]
    assert re.search(r"^\s+s0\s+enqueued\s+0/3", out, re.M)
    assert re.search(r"^\s+s1\s+pending\s+0/3 <- s0", out, re.M)
    assert re.search(r"^\s+s2\s+pending\s+0/3 <- s1", out, re.M)
    assert "waiting for a worker" in out
    assert "waiting for s0" in out and "waiting for s1" in out


def test_task_shows_failure_and_blocked_children(load_template: Any) -> None:
    task = failed_task(load_template)
    out = run("tasker_task", str(task.pk)).out
    assert f"task {task.pk}  default/cmd_failing@1.0.0  error" in out
    assert re.search(r"^\s+pay\s+error\s+1/3", out, re.M)
    assert "failed after 1 of 3 attempts: card declined" in out
    assert re.search(r"^\s+notify\s+pending\s+0/\d+ <- pay", out, re.M)
    assert "blocked: parent failed: pay" in out


def test_task_complete_has_no_reasons(load_template: Any) -> None:
    load_template(chain_yaml("cmd_done", 2))
    task = run_task_to_completion(create_task("cmd_done"))
    out = run("tasker_task", str(task.pk)).out
    assert "complete" in out.splitlines()[0]
    assert "steps 2/2 done" in out
    assert "waiting" not in out and "blocked" not in out
    assert len(out.strip().splitlines()) == 4  # header, summary, one line per step


def test_task_unknown_id() -> None:
    run_error("tasker_task", "987654", match="task 987654 does not exist")


def test_task_id_must_be_an_integer() -> None:
    with pytest.raises(CommandError, match="invalid int value"):
        call_command("tasker_task", "abc", stdout=io.StringIO(), stderr=io.StringIO())


# -- tasker_retry_step ----------------------------------------------------------------------


def test_retry_step_success(load_template: Any) -> None:
    task = failed_task(load_template)
    pay = step(task, "pay")
    result = run("tasker_retry_step", str(pay.pk), "--reason", "card updated", "--actor", "ops")
    assert result.out.strip() == f"step {pay.pk} (pay) enqueued"
    event = TaskEvent.objects.get(task=task, name="action.retry_step")
    assert (event.actor, event.reason) == ("ops", "card updated")
    task = run_task_to_completion(task)
    assert step(task, "pay").attempts == 2


def test_retry_step_with_downstream(load_template: Any) -> None:
    load_template(chain_yaml("cmd_redo", 3))
    task = run_task_to_completion(create_task("cmd_redo"))
    first = step(task, "s0")
    assert run("tasker_retry_step", str(first.pk), "--downstream").out.strip().endswith("enqueued")
    assert step(task, "s2").status == StepStatus.PENDING
    task = run_task_to_completion(task)
    assert task.status == TaskStatus.COMPLETE
    assert [step(task, f"s{i}").attempts for i in range(3)] == [2, 2, 2]


def test_retry_all_failed_steps_of_a_task(load_template: Any) -> None:
    task = failed_task(load_template)
    assert run("tasker_retry_step", "--task", str(task.pk)).out.strip() == (
        f"retrying 1 step(s) of task {task.pk}"
    )
    assert step(task, "pay").status == StepStatus.ENQUEUED
    run_error(
        "tasker_retry_step", "--task", str(task.pk), match=f"task {task.pk} has no failed steps"
    )


def test_retry_step_errors(load_template: Any) -> None:
    task = failed_task(load_template)
    run_error("tasker_retry_step", match="give a STEP_ID or --task TASK_ID")
    run_error("tasker_retry_step", "987654", match="step 987654 does not exist")
    run_error("tasker_retry_step", "--task", "987654", match="task 987654 does not exist")
    notify = step(task, "notify")
    error, _ = run_error("tasker_retry_step", str(notify.pk), match="'notify' is pending")
    assert "only failed, cancelled or backing-off steps" in str(error)
    assert step(task, "notify").status == StepStatus.PENDING


# -- tasker_resolve_step --------------------------------------------------------------------


def test_resolve_step_with_results(load_template: Any, tmp_path: Path) -> None:
    task = failed_task(load_template)
    pay = step(task, "pay")
    path = tmp_path / "results.json"
    path.write_text('{"payment_id": "manual"}')
    result = run("tasker_resolve_step", str(pay.pk), "--results", f"@{path}", "--reason", "phone")
    assert result.out.strip() == f"step {pay.pk} (pay) resolved_manually"
    task = run_task_to_completion(task)
    assert task.status == TaskStatus.COMPLETE
    assert step(task, "notify").results["parents"] == {"pay": {"payment_id": "manual"}}


def test_complete_step(load_template: Any) -> None:
    task = failed_task(load_template)
    pay = step(task, "pay")
    result = run("tasker_resolve_step", str(pay.pk), "--complete", "--results", '{"ok": 1}')
    assert result.out.strip() == f"step {pay.pk} (pay) complete"
    assert step(task, "pay").results == {"ok": 1}


def test_resolve_step_errors(load_template: Any) -> None:
    task = failed_task(load_template)
    pay = step(task, "pay")
    run_error("tasker_resolve_step", str(pay.pk), "--complete", match="needs results")
    run_error(
        "tasker_resolve_step", str(pay.pk), "--results", "{bad", match="--results is not valid JSON"
    )
    run_error("tasker_resolve_step", str(pay.pk), "--results", "[1]", match="must be a JSON object")
    run_error("tasker_resolve_step", "987654", match="step 987654 does not exist")
    assert step(task, "pay").status == StepStatus.ERROR  # nothing changed so far
    run("tasker_resolve_step", str(pay.pk))
    run_error("tasker_resolve_step", str(pay.pk), match="'pay' is already resolved_manually")


# -- tasker_cancel_task ---------------------------------------------------------------------


def test_cancel_task_success_and_invalid_transition(load_template: Any) -> None:
    load_template(chain_yaml("cmd_cancel", 2))
    task = create_task("cmd_cancel")
    result = run("tasker_cancel_task", str(task.pk), "--reason", "customer asked")
    assert result.out.strip() == f"task {task.pk} cancelled"
    assert set(WorkflowStep.objects.filter(task=task).values_list("status", flat=True)) == {
        StepStatus.CANCELLED
    }
    event = TaskEvent.objects.get(task=task, name="task.cancelled")
    assert (event.actor, event.reason) == ("cli", "customer asked")
    run_error("tasker_cancel_task", str(task.pk), match=f"task {task.pk} is already cancelled")
    pay = step(task, "s0")
    run_error("tasker_retry_step", str(pay.pk), match="is cancelled")
    run_error("tasker_resolve_step", str(pay.pk), match="is cancelled")


def test_cancel_task_errors(load_template: Any) -> None:
    run_error("tasker_cancel_task", "987654", match="task 987654 does not exist")
    load_template(chain_yaml("cmd_finished", 1))
    task = run_task_to_completion(create_task("cmd_finished"))
    run_error("tasker_cancel_task", str(task.pk), match="already complete")


# -- tasker_run_handler ---------------------------------------------------------------------


def test_run_handler_prints_results_as_json() -> None:
    result = run(
        "tasker_run_handler",
        "test.echo",
        "--context",
        '{"value": 3}',
        "--parent-results",
        '{"a": {"x": 1}}',
    )
    assert json.loads(result.out) == {"value": 3, "parents": {"a": {"x": 1}}}
    assert result.err == ""


def test_run_handler_by_dotted_path_with_config_and_attempt() -> None:
    result = run(
        "tasker_run_handler",
        "tests.testapp.tasker_handlers.Flaky",
        "--config",
        '{"fail_times": 1}',
        "--attempt",
        "2",
    )
    assert json.loads(result.out) == {"attempts": 2}


def test_run_handler_permanent_error() -> None:
    error, result = run_error(
        "tasker_run_handler", "test.permanent", match="PermanentError: card declined"
    )
    details = json.loads(result.err)["error"]
    assert details["error_code"] == "CARD_DECLINED"
    assert details["error_category"] == "payment"
    assert "CARD_DECLINED" in result.err
    assert result.out == ""


def test_run_handler_retryable_and_unexpected_errors() -> None:
    _, result = run_error(
        "tasker_run_handler", "test.flaky", match="RetryableError: flaky attempt 1"
    )
    assert json.loads(result.err)["error"]["error_class"] == "RetryableError"
    run_error("tasker_run_handler", "test.crashy", match=r"ValueError \(would be retried\)")


def test_run_handler_unknown_handler() -> None:
    error, _ = run_error(
        "tasker_run_handler", "test.nope", match="No step handler matches 'test.nope'"
    )
    assert "Did you mean" in str(error)


def test_run_handler_bad_json() -> None:
    run_error(
        "tasker_run_handler", "test.echo", "--context", "{x", match="--context is not valid JSON"
    )
    run_error(
        "tasker_run_handler",
        "test.echo",
        "--parent-results",
        "{",
        match="--parent-results is not valid JSON",
    )


@pytest.mark.parametrize("option", ["--context", "--inputs", "--config", "--parent-results"])
def test_run_handler_json_that_is_not_an_object(option: str) -> None:
    # Each option is documented as a JSON object; a list must be a CommandError naming the
    # option, not an AttributeError traceback (or a misleading "would be retried").
    error, _ = run_error(
        "tasker_run_handler", "test.echo", option, "[1, 2]", match=re.escape(option)
    )
    assert "object" in str(error)


# -- tasker_load_templates ------------------------------------------------------------------


def test_load_templates_success_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(chain_yaml("cmd_loaded", 2))
    result = run("tasker_load_templates", str(good))
    assert "created   default/cmd_loaded@1.0.0" in result.out
    assert result.last_line == "1 file(s): 1 created, 0 failed"
    assert run("tasker_load_templates", str(good)).last_line == "1 file(s): 1 unchanged, 0 failed"
    assert create_task("cmd_loaded").total_steps == 2
    good.write_text(chain_yaml("cmd_loaded", 3))
    _, refused = run_error("tasker_load_templates", str(good), match="1 template file")
    assert "refused" in refused.err and "--force" in refused.err
    assert "updated" in run("tasker_load_templates", str(good), "--force").out
    run_error("tasker_load_templates", str(tmp_path / "nope"), match="no such file or directory")
    bad = tmp_path / "bad.yaml"
    bad.write_text(chain_yaml("cmd_bad", 1, handler="test.nope"))
    _, failed = run_error("tasker_load_templates", str(bad), match="1 template file")
    assert "test.nope" in failed.err


def test_create_task_command_parser_builds() -> None:
    # Django's BaseCommand already defines --version (print Django's version); a command
    # adding its own --version makes argparse raise before anything runs.
    from tasker_django.management.commands.tasker_create_task import Command

    parser = Command().create_parser("manage.py", "tasker_create_task")
    options = parser.parse_args(["default", "name", "--template-version", "1.2.0"])
    assert options.template_version == "1.2.0"
