"""``manage.py payments_demo`` and ``payments_serve`` of the example project.

The commands run as subprocesses with the example project's settings on a SQLite file
of their own (``SQLITE_PATH``), as ``make demo`` and ``make serve`` run them.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from example_project.payments.demo import (
    COMPLETE,
    ERROR,
    REJECTED,
    TEMPLATES,
    Outcome,
    Submission,
    build_batch,
    format_table,
    percentile,
    summary_rows,
)

from .conftest import ROOT, SEED_DIR, wait_for

# -- the batch and its summary (pure) --------------------------------------------------------


def test_batch_mixes_every_kind_with_exactly_one_rejected_context() -> None:
    batch = build_batch(40)
    assert len(batch) == 40
    assert [s.number for s in batch] == list(range(1, 41))
    expected = Counter(s.expect for s in batch)
    assert expected[REJECTED] == 1
    assert expected[COMPLETE] > 2 * expected[ERROR]  # most succeed
    assert {s.template for s in batch} == set(TEMPLATES)
    assert sum(s.retries for s in batch) >= 4
    codes = {s.error_code for s in batch if s.expect == ERROR}
    assert codes == {"INVALID_AMOUNT", "AMOUNT_EXCEEDED", "UNSUPPORTED_TYPE", "FRAUD_SUSPECTED"}
    assert build_batch(40) == batch  # the same seed, the same batch


def test_short_batch_still_has_every_kind() -> None:
    batch = build_batch(11)
    assert Counter(s.expect for s in batch)[REJECTED] == 1
    assert {s.error_code for s in batch if s.expect == ERROR} == {
        "INVALID_AMOUNT",
        "AMOUNT_EXCEEDED",
        "UNSUPPORTED_TYPE",
        "FRAUD_SUSPECTED",
    }
    assert any(s.retries for s in batch)


def test_outcome_problem_tells_intended_from_unintended() -> None:
    ok = Submission(1, "linear_payment", "paid", {})
    fail = Submission(2, "payment_fanout", "limit", {}, expect=ERROR, error_code="AMOUNT_EXCEEDED")
    retry = Submission(3, "payment_fanout", "approval", {}, retries=True)
    assert Outcome(ok, COMPLETE).problem == ""
    assert "expected complete, ended error" in Outcome(ok, ERROR, error_code="X").problem
    assert Outcome(fail, ERROR, error_code="AMOUNT_EXCEEDED").problem == ""
    assert "expected error AMOUNT_EXCEEDED" in Outcome(fail, ERROR, error_code="BOOM").problem
    assert Outcome(retry, COMPLETE, retries=1).problem == ""
    assert "retry" in Outcome(retry, COMPLETE, retries=0).problem
    assert "ended in_progress" in Outcome(ok, "in_progress").problem


def test_summary_table() -> None:
    ok = Submission(1, "linear_payment", "paid", {})
    outcomes = [
        Outcome(ok, COMPLETE, seconds=1.0, retries=2),
        Outcome(ok, COMPLETE, seconds=3.0),
        Outcome(ok, ERROR, retries=1),
        Outcome(Submission(2, "credit_card_payment", "x", {}, expect=REJECTED), REJECTED),
    ]
    rows = summary_rows(outcomes)
    assert [r.template for r in rows] == [*TEMPLATES, "total"]
    lines = format_table(rows)
    assert lines[0].split() == [
        "template",
        "payments",
        "complete",
        "error",
        "rejected",
        "retries",
        "mean",
        "p95",
    ]
    assert lines[2].split() == ["linear_payment", "3", "2", "1", "0", "3", "2.00", "s", "3.00", "s"]
    assert lines[3].split() == ["payment_fanout", "0", "0", "0", "0", "0", "-", "-"]
    assert lines[-1].split()[:6] == ["total", "4", "2", "1", "1", "3"]
    assert percentile([5.0, 1.0, 2.0, 3.0, 4.0], 95) == 5.0
    assert percentile([1.0] * 19 + [9.0], 95) == 1.0


# -- the commands, as subprocesses -----------------------------------------------------------


def project_env(sqlite_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        SQLITE_PATH=str(sqlite_path),
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A migrated SQLite file with the example project's settings."""
    env = project_env(tmp_path_factory.mktemp("demo") / "demo.sqlite3")
    result = manage(env, "migrate", "--noinput", "-v", "0")
    assert result.returncode == 0, result.stderr
    # As make demo does: the seed templates too (the demo runs payment_workflow).
    result = manage(env, "tasker_load_templates", str(SEED_DIR))
    assert result.returncode == 0, result.stdout + result.stderr
    yield env


@pytest.mark.slow
@pytest.mark.workers
def test_demo_short_exits_0_with_the_summary(demo_db: dict[str, str]) -> None:
    started = time.monotonic()
    result = manage(demo_db, "payments_demo", "--short", "--timeout", "60")
    elapsed = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "Traceback" not in out + result.stderr
    header = next(line for line in out.splitlines() if line.strip().startswith("template"))
    assert header.split() == [
        "template",
        "payments",
        "complete",
        "error",
        "rejected",
        "retries",
        "mean",
        "p95",
    ]
    for name in TEMPLATES:
        assert re.search(rf"^\s+{name}\s+\d+\s+\d+\s+\d+", out, re.M), name
    total = re.search(r"^\s+total\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", out, re.M)
    assert total is not None
    assert total.groups()[:4] == ("11", "6", "4", "1")
    assert int(total.group(5)) >= 2  # the gateway timeout and the approval at least
    # The rejected context is a message, not a traceback.
    assert "rejected (as intended): The context does not match the schema" in out
    assert "$.payment_info.currency: 'JPY' is not one of" in out
    assert "AMOUNT_EXCEEDED" in out and "INVALID_AMOUNT" in out
    assert "All 11 payments ended as intended" in out
    assert "make serve" in out and "http://127.0.0.1:8000/admin/" in out
    assert "demo / demo" in out
    # The seed's payment_workflow, one line per behaviour section, read back from the run.
    assert "The seed's default/payment_workflow@1.0.0: its behaviour sections at work" in out
    assert "refused at creation: Payment amount cannot exceed $10,000" in out
    assert re.search(r"tasks\s+3/3 payments complete", out)
    sinks = re.search(r"events\s+\d+ events stored; .*: (.*)", out)
    assert sinks is not None and "monitoring" in sinks.group(1) and "analytics" in sinks.group(1)
    assert re.search(r"metrics\s+payment_processing_volume = 3", out)
    assert re.search(r"alerts\s+high_failure_rate: \w+", out)
    assert "sees card_number '********', cvv '********'" in out
    assert "the context is stored encrypted (AES-256-GCM)" in out
    assert re.search(r"audit log\s+\d+ records; e\.g\. task\.cancelled by payments_demo", out)
    assert "Stopping the workers... stopped." in out
    assert elapsed < 45
    assert "10/10 tasks" in result.stderr  # the progress bar


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.workers
def test_serve_runs_the_server_and_a_worker_and_stops_both(
    demo_db: dict[str, str], tmp_path: Path
) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "payments_serve", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=demo_db,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/") as response:
                    assert response.status == 200
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        # The worker runs a task created meanwhile.
        created = manage(
            demo_db,
            "shell",
            "-c",
            "from tasker_django import create_task; print(create_task('payment_fanout', "
            "namespace='payments', context={'amount': 12.5, 'customer_id': 7}).pk)",
        )
        assert created.returncode == 0, created.stderr
        task_id = int(created.stdout.split()[-1])
        with closing(sqlite3.connect(demo_db["SQLITE_PATH"])) as db:
            query = "SELECT status FROM tasker_task WHERE id = ?"
            wait_for(lambda: db.execute(query, [task_id]).fetchone()[0] == "complete", timeout=30)
        text = log.read_text()
        assert text.count("tasker worker: sweeping every") == 1, text  # not one per reload
        worker_pids = [int(p) for p in re.findall(r"process\(es\) \(pid (\d+)\)", text)]
        assert len(worker_pids) == 1
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=30)
        text = log.read_text()
        assert "Stopped the tasker worker(s)." in text
        assert "Traceback" not in text
        with pytest.raises(ProcessLookupError):
            os.kill(worker_pids[0], 0)
    finally:
        if proc.poll() is None:
            proc.terminate()  # stops its worker, as Ctrl-C does
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its worker follows (parent-death signal)
                proc.wait()
