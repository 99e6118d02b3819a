"""The real worker path: ``tasker_worker`` processes (django-q2 clusters + sweeper)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasker_django import create_task
from tasker_django.engine import dispatch
from tasker_django.models import StepAttempt, StepStatus, Task, TaskStatus, WorkflowStep

from .conftest import Workers, chain_yaml, wait_for
from .test_engine import DIAMOND, MIXED, TREE

pytestmark = [pytest.mark.workers, pytest.mark.django_db(transaction=True)]

FINISHED = (TaskStatus.COMPLETE, TaskStatus.ERROR, TaskStatus.CANCELLED)


def wait_finished(tasks: list[Task], timeout: float = 90) -> list[Task]:
    ids = [t.pk for t in tasks]
    wait_for(
        lambda: Task.objects.filter(pk__in=ids, status__in=FINISHED).count() == len(ids),
        timeout=timeout,
    )
    return list(Task.objects.filter(pk__in=ids).order_by("pk"))


def test_workflows_run_on_real_workers(workers: Workers, load_template: Any) -> None:
    for text in (DIAMOND, TREE, MIXED, chain_yaml("chain", 5)):
        load_template(text)
    load_template(
        chain_yaml(
            "flaky",
            1,
            handler="test.flaky",
            default_retry_limit=3,
            handler_config={"fail_times": 2},
            retry_backoff={"initial_delay": 0.1, "max_delay": 0.2, "jitter": False},
        )
    )
    load_template(chain_yaml("perm", 2, handler="test.permanent"))
    load_template(
        chain_yaml(
            "slow",
            1,
            handler="test.sleepy",
            timeout_seconds=0.5,
            default_retry_limit=2,
            handler_config={"seconds": 10, "sleep_times": 1},
            retry_backoff={"initial_delay": 0.1, "max_delay": 0.2, "jitter": False},
        )
    )
    workers.start(1)
    started = time.monotonic()
    tasks = {
        name: create_task(name, context={"value": 1})
        for name in ("diamond", "tree", "mixed", "chain", "flaky", "perm", "slow")
    }
    done = {t.named_task.name: t for t in wait_finished(list(tasks.values()))}
    elapsed = time.monotonic() - started
    for name in ("diamond", "tree", "mixed", "chain", "flaky", "slow"):
        assert done[name].status == TaskStatus.COMPLETE, (name, workers.output()[-3000:])
    assert done["perm"].status == TaskStatus.ERROR
    flaky = WorkflowStep.objects.get(task=done["flaky"])
    assert flaky.attempts == 3
    slow_attempts = list(
        StepAttempt.objects.filter(task=done["slow"]).values_list("outcome", flat=True)
    )
    assert slow_attempts == ["timeout", "success"]
    d = WorkflowStep.objects.get(task=done["diamond"], name="d")
    assert set(d.results["parents"]) == {"b", "c"}
    assert elapsed < 60


def test_retry_is_reenqueued_within_a_second_of_its_due_time(
    workers: Workers, load_template: Any
) -> None:
    load_template(
        chain_yaml(
            "due",
            1,
            handler="test.flaky",
            default_retry_limit=2,
            handler_config={"fail_times": 1, "retry_after": 1.0},
        )
    )
    workers.start(1)
    task = wait_finished([create_task("due")])[0]
    assert task.status == TaskStatus.COMPLETE
    first, second = StepAttempt.objects.filter(task=task).order_by("attempt_number")
    gap = (second.started_at - first.finished_at).total_seconds()
    assert 1.0 <= gap < 2.0, gap


def start_sleeping_step(
    workers: Workers, load_template: Any, tmp_path: Path, name: str
) -> tuple[Task, Path]:
    """One worker, and a 2-step task whose first attempt sleeps 30 s in its handler:
    returns the task and the marker file holding that handler's pid, once it sleeps."""
    load_template(
        chain_yaml(
            name,
            2,
            handler="test.sleepy",
            default_retry_limit=3,
            handler_config={"seconds": 30, "sleep_times": 1},
            retry_backoff={"initial_delay": 0.1, "max_delay": 0.2, "jitter": False},
        )
    )
    workers.start(1)
    task = create_task(name, context={"marker_dir": str(tmp_path)})
    marker = wait_for(lambda: next(tmp_path.glob("*-1.pid"), None), timeout=30)
    return task, marker


@pytest.mark.postgres_only
def test_kill_9_in_the_middle_of_a_handler(
    workers: Workers, load_template: Any, tmp_path: Path
) -> None:
    task, marker = start_sleeping_step(workers, load_template, tmp_path, "victim")
    pid = int(marker.read_text())
    os.kill(pid, signal.SIGKILL)
    task = wait_finished([task], timeout=90)[0]
    assert task.status == TaskStatus.COMPLETE, workers.output()[-3000:]
    first = WorkflowStep.objects.get(task=task, name="s0")
    outcomes = list(StepAttempt.objects.filter(step=first).values_list("outcome", flat=True))
    assert outcomes[0] == "worker_lost"
    assert outcomes[-1] == "success"
    lost = StepAttempt.objects.get(step=first, attempt_number=1)
    assert str(pid) in lost.worker


def process_group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def test_sigterm_to_the_whole_process_group_stops_the_worker(
    workers: Workers, load_template: Any, tmp_path: Path
) -> None:
    """systemd's default KillMode and ``kill -- -PGID`` send SIGTERM to every process
    of the worker at once. The django-q2 sentinel dies at once; the command must still
    exit (django-q2's own stop would wait forever on the dead sentinel), and the step
    its worker was running is recovered by the next worker."""
    task, _marker = start_sleeping_step(workers, load_template, tmp_path, "group")
    proc = workers.procs[0]
    others = [pid for pid in process_group(proc.pid) if pid != proc.pid]
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    (sentinel,) = (int(pid) for pid in children)
    # The worst order, made certain: the sentinel still looks alive when the command
    # starts stopping the cluster, and dies before it can answer.
    os.kill(sentinel, signal.SIGSTOP)
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(1)
    for pid in others:
        os.kill(pid, signal.SIGKILL if pid == sentinel else signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, workers.output()[-3000:]
    assert "tasker worker: stopped" in workers.output()
    workers.start(1)
    task = wait_finished([task], timeout=90)[0]
    assert task.status == TaskStatus.COMPLETE, workers.output()[-3000:]
    first = WorkflowStep.objects.get(task=task, name="s0")
    assert first.attempts == 2


@pytest.mark.postgres_only
def test_emptied_broker_loses_no_work(workers: Workers, load_template: Any) -> None:
    load_template(chain_yaml("lossy", 4))
    tasks = [create_task("lossy") for _ in range(10)]
    dispatch.purge_queue()  # every kick is gone before any worker saw it
    assert dispatch.queue_size() == 0
    workers.start(1)
    wait_for(lambda: Task.objects.filter(status=TaskStatus.COMPLETE).exists(), timeout=30)
    dispatch.purge_queue()  # and again in the middle of the run
    done = wait_finished(tasks, timeout=90)
    assert {t.status for t in done} == {TaskStatus.COMPLETE}
    assert StepAttempt.objects.filter(task__in=tasks).count() == 40


def _wal_syncs() -> int:
    """WAL flushes to disk so far (pg_stat_wal, the whole server), once every other
    backend of the test database has exited and reported its statistics."""
    from django.db import connection

    def others() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return cursor.fetchone()[0]

    wait_for(lambda: others() == 0, timeout=20)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")  # this backend's own
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT wal_sync FROM pg_stat_wal")
        return int(cursor.fetchone()[0])


@pytest.mark.postgres_only
def test_pg_synchronous_commit_off_stops_waiting_for_a_flush_per_transition(
    workers: Workers, load_template: Any
) -> None:
    """TASKER["PG_SYNCHRONOUS_COMMIT"] off on real workers: the same diamonds complete
    the same way, and most of the WAL flushes of their step transitions (five commits
    per diamond) are gone."""
    load_template(DIAMOND)
    syncs = {}
    for synchronous in ("1", "0"):
        tasks = [create_task("diamond", context={"value": i}) for i in range(40)]
        before = _wal_syncs()
        workers.start(1, extra_env={"TASKER_TEST_PG_SYNCHRONOUS_COMMIT": synchronous})
        done = wait_finished(tasks)
        workers.stop()
        syncs[synchronous] = _wal_syncs() - before
        assert {t.status for t in done} == {TaskStatus.COMPLETE}
        attempts = StepAttempt.objects.filter(task__in=tasks)
        assert attempts.count() == 160 and {a.outcome for a in attempts} == {"success"}
    # 200 engine commits per run (measured: about 245 flushes in all); the broker's own
    # (ORM: a kick taken and acknowledged per diamond) and the WAL writer's stay (about
    # 80 in all).
    assert syncs["1"] >= 160 and syncs["0"] < syncs["1"] / 2, syncs


@pytest.mark.postgres_only
def test_fan_in_of_200_enqueues_the_join_once(workers: Workers, load_template: Any) -> None:
    steps: list[dict[str, Any]] = [
        {"name": f"p{i}", "handler_class": "test.noop"} for i in range(200)
    ]
    steps.append(
        {
            "name": "join",
            "handler_class": "test.noop",
            "depends_on_steps": [f"p{i}" for i in range(200)],
        }
    )
    load_template(yaml.safe_dump({"name": "fanin", "version": "1.0.0", "step_templates": steps}))
    workers.start(2)
    for _run in range(20):
        task = create_task("fanin")
        task = wait_finished([task], timeout=60)[0]
        assert task.status == TaskStatus.COMPLETE
        join = WorkflowStep.objects.get(task=task, name="join")
        assert join.attempts == 1 and join.remaining_parents == 0
        assert StepAttempt.objects.filter(step=join).count() == 1
        last_parent = max(
            WorkflowStep.objects.filter(task=task)
            .exclude(pk=join.pk)
            .values_list("completed_at", flat=True)
        )
        assert join.claimed_at >= last_parent
        assert WorkflowStep.objects.filter(task=task, status=StepStatus.COMPLETE).count() == 201
