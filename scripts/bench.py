"""``make bench``: tasker-django next to raw django-q2 on PostgreSQL, ORM and Redis brokers.

Usage (from the repository root; ``make bench`` starts PostgreSQL and Redis first)::

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python scripts/bench.py

The script drops and recreates its own database (``tasker_bench``, or ``BENCH_DB_NAME``)
on that server, migrates it, then runs one phase per broker in a child process
(django-q2 reads its settings once per process). Each phase starts ONE worker process
(``manage.py tasker_worker``, or ``manage.py qcluster`` for the raw django-q2 numbers)
running one cluster of 2 workers, and measures:

* per-step latency of a 20-step linear chain, from the steps' ``claimed_at`` stamps,
  next to a raw chain of self-enqueuing no-op django-q2 tasks (stamps kept in Redis);
* throughput of 500 diamond tasks (2,000 steps) queued before the worker starts, from
  the first step started to the last step completed, next to 2,000 raw no-op
  ``async_task(save=False)`` messages drained by the same cluster settings, in
  alternating rounds; rounds during which the host slowed this VM's CPUs, as probes
  timing a fixed piece of Python work on each CPU show, are set aside (``HostProbe``).

A last phase (ORM broker, no worker) times ``create_task`` of a 10,000-step template
and counts the SQL statements ``run_step_loop`` issues to finish one step of a 4-step
and of a 10,000-step task. The result is printed as a Markdown table; the exit status
is 0 even when a target is missed (it is a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SETTINGS = "scripts.bench_settings"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/test"

CHAIN_STEPS = 20
CHAINS = 10  # measured chains per broker (after one warm-up chain)
DIAMONDS = 500
RAW_MESSAGES = 2000
# Throughput rounds alternate raw and tasker. The table shows the medians of the rounds
# the host did not slow down (see HostProbe): at least KEPT_ROUNDS of each, running up
# to MAX_ROUNDS pairs to get them.
KEPT_ROUNDS = 3
MAX_ROUNDS = 7
HOST_SLOWED = 1.2  # a round is "slowed" when the probe's work took this much longer
BIG_STEPS = 10_000
COST_DIAMONDS = 300  # diamonds run in one process for the cost of a step
CREATE_REPEATS = 3

# Redis keys the raw django-q2 functions write their stamps to.
KEY_PREFIX = "tasker_bench:"
COUNT_KEY = KEY_PREFIX + "count"
FIRST_KEY = KEY_PREFIX + "first"
LAST_KEY = KEY_PREFIX + "last"

# Wall-clock limits (seconds).
START_TIMEOUT = 60
CHAIN_TIMEOUT = 30
DRAIN_TIMEOUT = 180
PHASE_TIMEOUT = 540
TOTAL_BUDGET = 900  # the whole run gives up after this


# ---------------------------------------------------------------------------
# Raw django-q2 functions (imported by the qcluster workers as scripts.bench.*)
# ---------------------------------------------------------------------------

_cache: dict[str, Any] = {}


def _redis() -> Any:
    """One Redis client per process (the cluster forks, so key it by pid)."""
    key = f"redis:{os.getpid()}"
    client = _cache.get(key)
    if client is None:
        import redis
        from django.conf import settings

        client = _cache[key] = redis.Redis(**settings.BENCH_REDIS)
    return client


def _q_broker() -> Any:
    """One django-q2 broker per process, reused for every enqueue."""
    key = f"broker:{os.getpid()}"
    broker = _cache.get(key)
    if broker is None:
        from django_q.brokers import get_broker

        broker = _cache[key] = get_broker()
    return broker


def raw_noop(total: int) -> None:
    """A no-op task; counts itself so the benchmark knows when ``total`` ran."""
    now = time.time()
    client = _redis()
    done = client.incr(COUNT_KEY)
    if done == 1:
        client.set(FIRST_KEY, repr(now))
    if done == total:
        client.set(LAST_KEY, repr(time.time()))


def raw_hop(remaining: int, key: str) -> None:
    """One link of a raw chain: stamp the time, then enqueue the next link."""
    from django_q.tasks import async_task

    _redis().rpush(key, repr(time.time()))
    if remaining > 1:
        async_task("scripts.bench.raw_hop", remaining - 1, key, broker=_q_broker(), save=False)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def phase_env(broker: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "BENCH_BROKER": broker,
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


class Process:
    """A child process in its own session; stopped with SIGTERM, then its whole group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = logdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: str | None = None) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if ready is not None:
            proc = self.proc

            def is_ready() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.output()[-3000:]}")
                return ready.encode() in self.log.read_bytes()

            wait_until(is_ready, START_TIMEOUT, f"{self.name} to start", interval=0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        # SIGTERM to the main process only: the cluster stops its own children
        # gracefully (a SIGTERM to the whole group kills them at once; raw qcluster's
        # main process then hangs, see tasker_worker._stop_cluster).
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Stray children of the group (a cluster worker that ignored SIGTERM).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def check(self) -> bool:
        """Raise if the process has exited (a crashed worker must not look like a slow one)."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.output()[-3000:]}")
        return True

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def running(process: Process, ready: str | None = None) -> Iterator[Process]:
    try:
        process.start(ready)
        yield process
    finally:
        process.stop()


# The probe's work: about 0.5 ms of pure Python every 100 ms (about 0.5% of one CPU), on
# the CPU given as its second argument. Kept small: it runs beside the rounds it judges,
# and tasker-django, CPU-bound, would lose what it takes (at 1 ms every 50 ms the two
# probes took about 2% of the machine).
PROBE_CODE = """
import os, sys, time
cpu = int(sys.argv[2])
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {cpu})
def work():
    s = 0
    for i in range(10000):
        s += i * i
out = open(sys.argv[1], "a", buffering=1)
while True:
    started = time.thread_time()
    work()
    out.write(f"{time.time():.3f} {cpu} {1000 * (time.thread_time() - started):.4f}\\n")
    time.sleep(0.1)
"""


def _cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return [0]


class HostProbe:
    """Times a fixed piece of Python work, in CPU time, on each CPU, all through the run.

    On a shared virtual machine the host sometimes runs one of this VM's CPUs markedly
    slower for seconds at a time (the same work then takes 1.5 to 1.9 times as long),
    each CPU on its own. CPU time leaves out the wait for a CPU, so each probe reads its
    CPU's speed, not the benchmark's own load. A round's slowdown is the mean over the
    CPUs; rounds slowed by HOST_SLOWED or more are set aside. tasker, CPU-bound on both
    CPUs, loses much more in them than raw django-q2, whose rate is set by its pusher's
    round trips and its workers' restarts.
    """

    def __init__(self, path: Path, start: bool = True) -> None:
        self.path = path
        self.procs = (
            [subprocess.Popen([PYTHON, "-c", PROBE_CODE, str(path), str(c)]) for c in _cpus()]
            if start
            else []
        )

    @classmethod
    def for_phase(cls, logdir: Path) -> HostProbe:
        """The run's probe (started by main(): one baseline for every phase), or one of
        the phase's own when it runs alone."""
        shared = os.environ.get("BENCH_PROBE_LOG")
        if shared:
            return cls(Path(shared), start=False)
        probe = cls(logdir / "probe.log")
        time.sleep(3)  # samples for a baseline before the first round
        return probe

    def samples(
        self, start: float | None = None, end: float | None = None
    ) -> dict[str, list[float]]:
        """Probe times (ms) by CPU, between ``start`` and ``end``."""
        values: dict[str, list[float]] = {}
        if not self.path.exists():
            return values
        for line in self.path.read_text().splitlines():
            stamp, cpu, ms = line.split()
            if (start is None or float(stamp) >= start) and (end is None or float(stamp) <= end):
                values.setdefault(cpu, []).append(float(ms))
        return values

    #: Consecutive samples (two seconds) whose median is one reading of a CPU's speed.
    STRETCH = 20

    def slowdown(self, start: float, end: float) -> float | None:
        """For each CPU, the median probe time between ``start`` and ``end`` over the
        run's fast time on it; their mean. None without enough samples.

        The fast time is the 10th percentile of the medians of every two-second stretch
        of samples so far, not of the samples themselves: single samples spread widely
        (on an idle Intel host of this project, the median sample took 1.3 times the
        10th percentile), and a baseline taken from them called every round slowed.
        """
        window, every = self.samples(start, end), self.samples()
        ratios = []
        for cpu, values in window.items():
            run = every.get(cpu, [])
            stretches = [
                statistics.median(run[i : i + self.STRETCH])
                for i in range(0, len(run) - self.STRETCH + 1, self.STRETCH)
            ]
            if len(stretches) >= 5:
                ratios.append(statistics.median(values) / percentile(stretches, 10))
        return statistics.fmean(ratios) if ratios else None

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=10)


def tasker_worker(logdir: Path, broker: str, name: str, eager: bool = True) -> Process:
    env = phase_env(broker, BENCH_EAGER="1" if eager else "0")
    argv = [PYTHON, "manage.py", "tasker_worker", f"--settings={SETTINGS}"]
    return Process(name, argv, env, logdir)


def qcluster(logdir: Path, broker: str, name: str) -> Process:
    argv = [PYTHON, "manage.py", "qcluster", f"--settings={SETTINGS}"]
    return Process(name, argv, phase_env(broker), logdir)


# ---------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------


def chain_yaml(name: str, n: int) -> str:
    import yaml

    steps: list[dict[str, Any]] = []
    for i in range(n):
        step: dict[str, Any] = {"name": f"s{i}", "handler_class": "tasker.noop"}
        if i:
            step["depends_on_step"] = f"s{i - 1}"
        steps.append(step)
    return yaml.safe_dump(
        {"name": name, "version": "1.0.0", "step_templates": steps}, sort_keys=False
    )


DIAMOND_YAML = """
name: bench_diamond
version: "1.0.0"
step_templates:
  - {name: a, handler_class: tasker.noop}
  - {name: b, handler_class: tasker.noop, depends_on_step: a}
  - {name: c, handler_class: tasker.noop, depends_on_step: a}
  - {name: d, handler_class: tasker.noop, depends_on_steps: [b, c]}
"""


def load_templates(*texts: str) -> None:
    from tasker_django.testing.helpers import load_test_template

    for text in texts:
        load_test_template(text)


# ---------------------------------------------------------------------------
# Phase: one broker (ORM or Redis)
# ---------------------------------------------------------------------------


def reset_markers() -> None:
    client = _redis()
    keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=1000))
    if keys:
        client.delete(*keys)


def analyze() -> None:
    """Refresh the planner's statistics (autovacuum may be off, as on the CI machine)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def purge() -> None:
    from tasker_django.engine import dispatch

    dispatch.purge_queue()
    _q_broker().purge_queue()


def raw_chain_latency(logdir: Path, broker: str) -> dict[str, Any]:
    from django_q.tasks import async_task

    purge()
    reset_markers()
    client = _redis()
    gaps: list[float] = []
    with running(qcluster(logdir, broker, f"{broker}-qcluster-chain")) as proc:
        # The cluster prints nothing at WARNING level: a first task tells it is up.
        async_task("scripts.bench.raw_hop", 1, KEY_PREFIX + "probe", broker=_q_broker(), save=False)
        wait_until(
            lambda: proc.check() and client.llen(KEY_PREFIX + "probe"),
            START_TIMEOUT,
            "qcluster to start",
        )
        for i in range(CHAINS + 1):
            key = f"{KEY_PREFIX}hop:{i}"
            async_task("scripts.bench.raw_hop", CHAIN_STEPS, key, broker=_q_broker(), save=False)
            wait_until(
                lambda key=key: proc.check() and client.llen(key) >= CHAIN_STEPS,
                CHAIN_TIMEOUT,
                "a raw chain",
            )
            stamps = [float(x) for x in client.lrange(key, 0, -1)]
            if i:  # chain 0 warms up the workers
                gaps += [(b - a) * 1000 for a, b in itertools.pairwise(stamps)]
    return summarize_gaps(gaps)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median rate (the lower middle one of an even number), among the
    rounds the host did not slow down when there are KEPT_ROUNDS of them."""
    kept = [r for r in runs if not r.get("slowed")]
    ordered = sorted(kept if len(kept) >= KEPT_ROUNDS else runs, key=lambda r: r["per_second"])
    return ordered[(len(ordered) - 1) // 2]


def kept_rounds(runs: list[dict[str, Any]]) -> int:
    return sum(not r.get("slowed") for r in runs)


def rounds_used(runs: list[dict[str, Any]]) -> str:
    """'3 of 5 rounds' (the rounds median_run chose from)."""
    kept = kept_rounds(runs)
    if kept >= KEPT_ROUNDS:
        return f"{kept} of {len(runs)} rounds not slowed"
    return f"all {len(runs)} rounds (too few not slowed)"


def median_of_all(runs: list[dict[str, Any]]) -> float:
    return statistics.median(r["per_second"] for r in runs)


def judge(run: dict[str, Any], probe: HostProbe) -> dict[str, Any]:
    """Mark a throughput round the host slowed (see HostProbe)."""
    slowdown = probe.slowdown(*run["window"])
    run["host_slowdown"] = slowdown
    run["slowed"] = slowdown is not None and slowdown >= HOST_SLOWED
    return run


def raw_throughput(logdir: Path, broker: str, round_: int = 1) -> dict[str, Any]:
    from django_q.tasks import async_task

    purge()
    reset_markers()
    client = _redis()
    started = time.monotonic()
    for _ in range(RAW_MESSAGES):
        async_task("scripts.bench.raw_noop", RAW_MESSAGES, broker=_q_broker(), save=False)
    enqueue_s = time.monotonic() - started
    proc = qcluster(logdir, broker, f"{broker}-qcluster-throughput-{round_}")
    with running(proc):
        wall_start = time.monotonic()
        wait_until(
            lambda: proc.check() and client.get(LAST_KEY),
            DRAIN_TIMEOUT,
            f"{RAW_MESSAGES} raw tasks",
            interval=0.05,
        )
        wall = time.monotonic() - wall_start
    first, last = float(client.get(FIRST_KEY)), float(client.get(LAST_KEY))
    ran = int(client.get(COUNT_KEY) or 0)
    seconds = last - first
    return {
        "items": ran,
        "seconds": seconds,
        "per_second": ran / seconds,
        "wall_seconds": wall,
        "enqueue_seconds": enqueue_s,
        "window": (first, last),
    }


def summarize_gaps(gaps: list[float]) -> dict[str, Any]:
    return {
        "n": len(gaps),
        "p50_ms": percentile(gaps, 50),
        "p95_ms": percentile(gaps, 95),
        "mean_ms": statistics.fmean(gaps) if gaps else float("nan"),
    }


def tasker_chain_latency(logdir: Path, broker: str, eager: bool) -> dict[str, Any]:
    from tasker_django import create_task
    from tasker_django.models import Task, TaskStatus, WorkflowStep

    purge()
    analyze()
    gaps: list[float] = []
    per_task_ms: list[float] = []
    name = f"{broker}-tasker-chain{'' if eager else '-no-eager'}"
    worker = tasker_worker(logdir, broker, name, eager=eager)
    with running(worker, ready="sweeping every"):
        for i in range(CHAINS + 1):
            task = create_task("bench_chain20")
            wait_until(
                lambda task=task: (
                    worker.check()
                    and Task.objects.filter(pk=task.pk, status=TaskStatus.COMPLETE).exists()
                ),
                CHAIN_TIMEOUT,
                "a tasker chain",
            )
            if not i:
                continue  # warm-up
            stamps = list(
                WorkflowStep.objects.filter(task=task)
                .order_by("position")
                .values_list("claimed_at", flat=True)
            )
            gaps += [(b - a).total_seconds() * 1000 for a, b in itertools.pairwise(stamps)]
            done = Task.objects.get(pk=task.pk)
            per_task_ms.append((done.completed_at - done.created_at).total_seconds() * 1000)
    result = summarize_gaps(gaps)
    result["task_ms_median"] = statistics.median(per_task_ms)
    return result


def tasker_throughput(logdir: Path, broker: str, round_: int = 1) -> dict[str, Any]:
    from django.db.models import Count, Max, Min, Q

    from tasker_django import create_task
    from tasker_django.engine import dispatch
    from tasker_django.models import StepStatus, Task, TaskStatus, WorkflowStep

    purge()
    started = time.monotonic()
    ids = [create_task("bench_diamond").pk for _ in range(DIAMONDS)]
    create_s = time.monotonic() - started
    analyze()
    queued = dispatch.queue_size()
    proc = tasker_worker(logdir, broker, f"{broker}-tasker-diamonds-{round_}")
    with running(proc):
        wall_start = time.monotonic()
        wait_until(
            # One range scan that stops at the first unfinished task: polling must not
            # take CPU from the cluster it measures.
            lambda: (
                proc.check()
                and not Task.objects.filter(pk__range=(min(ids), max(ids)))
                .exclude(status=TaskStatus.COMPLETE)
                .exists()
            ),
            DRAIN_TIMEOUT,
            f"{DIAMONDS} diamond tasks",
            interval=0.1,
        )
        wall = time.monotonic() - wall_start
    agg = WorkflowStep.objects.filter(task_id__in=ids).aggregate(
        first=Min("started_at"),
        last=Max("completed_at"),
        steps=Count("id"),
        complete=Count("id", filter=Q(status=StepStatus.COMPLETE)),
        retried=Count("id", filter=Q(attempts__gt=1)),
    )
    seconds = (agg["last"] - agg["first"]).total_seconds()
    return {
        "items": agg["steps"],
        "complete": agg["complete"],
        "retried": agg["retried"],
        "seconds": seconds,
        "per_second": agg["steps"] / seconds,
        "wall_seconds": wall,
        "create_seconds": create_s,
        "kicks_queued": queued,
        "window": (agg["first"].timestamp(), agg["last"].timestamp()),
    }


def phase_broker(broker: str, logdir: Path) -> dict[str, Any]:
    load_templates(chain_yaml("bench_chain20", CHAIN_STEPS), DIAMOND_YAML)
    results: dict[str, Any] = {}
    try:
        log(f"{broker}: raw django-q2 chain latency")
        results["raw_chain"] = raw_chain_latency(logdir, broker)
        log(f"{broker}: tasker chain latency")
        results["chain"] = tasker_chain_latency(logdir, broker, eager=True)
        log(f"{broker}: tasker chain latency, eager continuation off")
        results["chain_no_eager"] = tasker_chain_latency(logdir, broker, eager=False)
        # Throughput rounds alternate raw and tasker, so that a noisy minute on a shared
        # machine hits both sides; the table compares the medians of the rounds the host
        # did not slow down (HostProbe), running more rounds until each side has
        # KEPT_ROUNDS of them (at most MAX_ROUNDS).
        raw_runs, runs = [], []
        probe = HostProbe.for_phase(logdir)
        try:
            for round_ in range(1, MAX_ROUNDS + 1):
                if min(kept_rounds(raw_runs), kept_rounds(runs)) >= KEPT_ROUNDS:
                    break  # enough rounds the host did not slow, on both sides
                log(f"{broker}: raw django-q2 throughput ({RAW_MESSAGES} tasks), round {round_}")
                raw_runs.append(judge(raw_throughput(logdir, broker, round_), probe))
                log(f"{broker}: tasker throughput ({DIAMONDS} diamonds), round {round_}")
                runs.append(judge(tasker_throughput(logdir, broker, round_), probe))
        finally:
            probe.stop()
        results["raw_throughput_runs"], results["throughput_runs"] = raw_runs, runs
        results["raw_throughput"] = median_run(raw_runs)
        results["throughput"] = median_run(runs)
    finally:
        purge()
        reset_markers()
    return results


# ---------------------------------------------------------------------------
# Phase: creation time and statements per step (ORM broker, no worker)
# ---------------------------------------------------------------------------


def statements_for_step(step_id: int) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tasker_django.engine.runner import run_step_loop

    with CaptureQueriesContext(connection) as ctx:
        ran = run_step_loop(step_id, worker="bench", eager=False)
    if ran != 1:
        raise RuntimeError(f"run_step_loop ran {ran} steps for step {step_id}, expected 1")
    return [q["sql"] for q in ctx.captured_queries]


def _backend_cpu_seconds(pid: int) -> float | None:
    """CPU time of a PostgreSQL backend on this host (None when it runs elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def step_cost() -> dict[str, Any]:
    """Diamond steps run in this process, without django-q2: Python and PostgreSQL CPU
    per step, the cost the two workers and their backends share in the throughput run."""
    import resource

    from django.db import connection

    from tasker_django import create_task
    from tasker_django.engine import dispatch
    from tasker_django.engine.runner import run_step_loop
    from tasker_django.models import StepStatus, WorkflowStep

    load_templates(DIAMOND_YAML)
    with dispatch.suppressed():
        ids = [create_task("bench_diamond").pk for _ in range(COST_DIAMONDS)]
    analyze()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    def enqueued() -> list[int]:
        rows = WorkflowStep.objects.filter(task_id__in=ids, status=StepStatus.ENQUEUED)
        return list(rows.order_by("pk").values_list("pk", flat=True))

    pg_before = _backend_cpu_seconds(backend)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    py_before = usage.ru_utime + usage.ru_stime
    wall = time.perf_counter()
    ran = 0
    with dispatch.suppressed():  # the siblings' kicks: no broker in this measurement
        queue = enqueued()
        while queue:
            for step_id in queue:
                ran += run_step_loop(step_id, worker="bench", eager=True)
            queue = enqueued()
    wall = time.perf_counter() - wall
    usage = resource.getrusage(resource.RUSAGE_SELF)
    py = usage.ru_utime + usage.ru_stime - py_before
    pg_after = _backend_cpu_seconds(backend)
    return {
        "steps": ran,
        "wall_ms": 1000 * wall / ran,
        "python_ms": 1000 * py / ran,
        "postgres_ms": None if pg_before is None else 1000 * (pg_after - pg_before) / ran,
    }


def phase_sql(logdir: Path) -> dict[str, Any]:
    from django.db import connection

    from tasker_django import create_task
    from tasker_django.models import Task, TaskStatus, WorkflowStep

    purge()
    results: dict[str, Any] = {}
    started = time.monotonic()
    load_templates(chain_yaml("bench_chain4", 4))
    big_text = chain_yaml("bench_chain10000", BIG_STEPS)
    load_templates(big_text)
    results["load_big_seconds"] = time.monotonic() - started
    analyze()
    log(f"sql: {BIG_STEPS}-step template loaded in {results['load_big_seconds']:.1f} s")

    timings = []
    for _ in range(CREATE_REPEATS):
        # Fresh statistics, as autovacuum keeps them: the earlier tasks are in them, the
        # new one is not (which is what the planner sees in production).
        analyze()
        started = time.perf_counter()
        task = create_task("bench_chain10000")
        timings.append(time.perf_counter() - started)
        assert WorkflowStep.objects.filter(task=task).count() == BIG_STEPS
    results["create_big_seconds"] = timings
    # Do not leave thousands of pending steps behind for later runs' sweepers.
    Task.objects.filter(named_task__name="bench_chain10000").update(status=TaskStatus.CANCELLED)
    purge()
    analyze()

    counts: dict[str, Any] = {}
    for name, size in (("bench_chain4", 4), ("bench_chain10000", BIG_STEPS)):
        task = create_task(name)
        steps = dict(WorkflowStep.objects.filter(task=task).values_list("name", "pk"))
        first = statements_for_step(steps["s0"])
        later = statements_for_step(steps["s1"])
        counts[str(size)] = {"first": first, "later": later}
    results["statements"] = counts
    purge()
    log(f"sql: cost of a step in one process ({COST_DIAMONDS} diamonds, no django-q2)")
    results["step_cost"] = step_cost()
    purge()
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        results["postgres"] = cursor.fetchone()[0]
        cursor.execute("SHOW autovacuum")
        results["autovacuum"] = cursor.fetchone()[0]
        cursor.execute("SHOW synchronous_commit")
        results["synchronous_commit"] = cursor.fetchone()[0]
    return results


def run_phase(phase: str, out: Path, logdir: Path) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    import django

    django.setup()

    def _terminate(signum: int, frame: Any) -> None:
        raise SystemExit(f"phase {phase} stopped by signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    result = phase_sql(logdir) if phase == "sql" else phase_broker(phase, logdir)
    out.write_text(json.dumps(result, default=str))


# ---------------------------------------------------------------------------
# Orchestration and report
# ---------------------------------------------------------------------------


def recreate_database(url: str, name: str) -> None:
    import psycopg

    parts = urlparse(url)
    conninfo = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 5432,
        "user": parts.username or "postgres",
        "dbname": "postgres",
    }
    if parts.password:
        conninfo["password"] = parts.password
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def run_child(argv: list[str], env: dict[str, str], timeout: float, what: str) -> None:
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} took more than {timeout:g} s") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    if code != 0:
        raise RuntimeError(f"{what} failed with exit status {code}")


def machine_info(pg_version: str, autovacuum: str, synchronous_commit: str) -> list[str]:
    from importlib.metadata import version

    import django
    import redis

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        client = redis.Redis(host=os.environ.get("BENCH_REDIS_HOST", "127.0.0.1"))
        redis_version = client.info("server")["redis_version"]
    except Exception:
        redis_version = "?"
    return [
        f"- CPUs (nproc): {os.cpu_count()} ({cpu})",
        f"- PostgreSQL {pg_version} (autovacuum {autovacuum}; the benchmark runs "
        f"`VACUUM ANALYZE` before each tasker measurement; server `synchronous_commit` "
        f"{synchronous_commit}), Redis {redis_version}",
        f"- Python {platform.python_version()}, Django {django.get_version()}, "
        f"django-q2 {version('django-q2')}",
        "- One worker process, one django-q2 cluster of 2 workers, ORM broker `poll` 0.02 s, "
        "`save=False` kicks, `recycle` "
        + (os.environ.get("BENCH_RECYCLE") or "500 (django-q2's default)")
        + ", `guard_cycle` "
        + (os.environ.get("BENCH_GUARD_CYCLE") or "0.5 s (django-q2's default)"),
        "- The engine's hot statements run prepared (`TASKER['PG_PREPARED_STATEMENTS']`, "
        "the default)",
        (
            "- Step transitions wait for PostgreSQL's flush to disk "
            "(`TASKER['PG_SYNCHRONOUS_COMMIT']`, the default)"
            if os.environ.get("BENCH_PG_SYNCHRONOUS_COMMIT", "1") != "0"
            else "- **`TASKER['PG_SYNCHRONOUS_COMMIT']` off (not the default)**: step "
            "transitions commit without waiting for PostgreSQL's flush to disk"
        ),
    ]


TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK")


def count_statements(queries: list[str]) -> tuple[int, int]:
    """(statements, transaction-control statements) among captured queries."""
    control = sum(1 for q in queries if q.strip().upper() in TRANSACTION_CONTROL)
    return len(queries) - control, control


def verdict(ok: bool) -> str:
    return "PASS" if ok else "**MISS**"


def report(results: dict[str, Any], elapsed: float) -> str:
    sql = results["sql"]
    lines = ["## tasker-django benchmark", ""]
    lines += machine_info(sql["postgres"], sql["autovacuum"], sql["synchronous_commit"])
    before, after = results["load"]
    lines.append(
        f"- Load average (1 min) before / after the run (after includes the benchmark): "
        f"{before[0]:.2f} / {after[0]:.2f}"
    )
    # The load after the run includes the benchmark's own processes; before, only others'.
    if before[0] > 0.5 * (os.cpu_count() or 1):
        lines += [
            "",
            f"> **Warning:** the machine was busy before the run (load average {before[0]:.1f} "
            f"on {os.cpu_count()} CPUs): other processes competed for the CPUs, so these "
            "numbers are pessimistic. Re-run on an idle machine.",
        ]
    lines += [
        "",
        "| Measure | Broker | tasker-django | raw django-q2 | Target | Result |",
        "|---|---|---|---|---|---|",
    ]
    for broker, label in (("orm", "ORM"), ("redis", "Redis")):
        r = results[broker]
        chain, raw_chain = r["chain"], r["raw_chain"]
        lines.append(
            f"| Per-step latency, {CHAIN_STEPS}-step chain, p50 / p95 | {label} "
            f"| {chain['p50_ms']:.2f} / {chain['p95_ms']:.2f} ms "
            f"| {raw_chain['p50_ms']:.2f} / {raw_chain['p95_ms']:.2f} ms "
            f"| p50 ≤ 3 ms | {verdict(chain['p50_ms'] <= 3)} |"
        )
        no_eager = r["chain_no_eager"]
        lines.append(
            f"| ↳ same, eager continuation off (every step through the broker) | {label} "
            f"| {no_eager['p50_ms']:.2f} / {no_eager['p95_ms']:.2f} ms "
            f"| {raw_chain['p50_ms']:.2f} / {raw_chain['p95_ms']:.2f} ms | (info) | |"
        )
        tp, raw_tp = r["throughput"], r["raw_throughput"]
        ratio = tp["per_second"] / raw_tp["per_second"]
        runs, raw_runs = r["throughput_runs"], r["raw_throughput_runs"]
        lines.append(
            f"| Throughput, {DIAMONDS} diamonds × 4 steps (vs {RAW_MESSAGES} raw no-op tasks), "
            f"median of {rounds_used(runs)} (raw: {rounds_used(raw_runs)}) "
            f"| {label} | {tp['per_second']:.0f} steps/s | {raw_tp['per_second']:.0f} tasks/s "
            f"| ≥ 0.8× raw ({ratio:.2f}×) | {verdict(ratio >= 0.8)} |"
        )
        every, raw_every = median_of_all(runs), median_of_all(raw_runs)
        lines.append(
            f"| ↳ same, median of every round, slowed or not | {label} "
            f"| {every:.0f} steps/s | {raw_every:.0f} tasks/s | ({every / raw_every:.2f}×) | |"
        )
    create = sql["create_big_seconds"]
    lines.append(
        f"| Create a {BIG_STEPS:,}-step task, median (slowest) of {len(create)} | ORM "
        f"| {statistics.median(create):.2f} s ({max(create):.2f} s) | – | < 3 s, every time "
        f"| {verdict(max(create) < 3)} |"
    )
    counts = {
        size: {key: count_statements(queries) for key, queries in c.items()}
        for size, c in sql["statements"].items()
    }
    small, big = counts["4"], counts[str(BIG_STEPS)]
    for key, what in (("later", "a step"), ("first", "the first step (it also starts the task)")):
        same = small[key] == big[key]
        for size in ("4", str(BIG_STEPS)):
            n, control = counts[size][key]
            lines.append(
                f"| SQL statements to finish {what} of a {int(size):,}-step task | ORM "
                f"| {n} (+{control} BEGIN/COMMIT) | – | ≤ 8, same for both sizes "
                f"| {verdict(n <= 8 and same)} |"
            )
    cost = sql["step_cost"]
    pg_ms = "n/a (PostgreSQL on another host)"
    if cost["postgres_ms"] is not None:
        pg_ms = f"{cost['postgres_ms']:.2f} ms of PostgreSQL backend CPU"
    lines += [
        "",
        f"Cost of a diamond step run in one process without django-q2 ({cost['steps']} "
        f"steps): {cost['python_ms']:.2f} ms of Python CPU, {pg_ms}, "
        f"{cost['wall_ms']:.2f} ms wall.",
    ]
    lines += [
        "",
        f"Latency: gaps between consecutive steps' `claimed_at` over {CHAINS} chains "
        f"({CHAINS * (CHAIN_STEPS - 1)} gaps); raw: gaps between the start stamps of a no-op "
        "task that `async_task`s itself (reused broker, `save=False`). "
        "Throughput: all work queued with the worker stopped, then one worker started; "
        "measured from the first step (task) started to the last finished; "
        "raw and tasker rounds alternate; a probe process on each CPU times a fixed piece "
        "of Python work (CPU time, every 100 ms) all through the run, and a round during "
        f"which it took {HOST_SLOWED:g}× the run's fast time or more, on average over the "
        "CPUs (the host slowed this VM's CPUs), "
        f"is set aside: pairs run until each side has {KEPT_ROUNDS} rounds not slowed "
        f"(at most {MAX_ROUNDS} pairs), and the table shows their medians. "
        "Statements: `CaptureQueriesContext` around `run_step_loop(step, eager=False)`, "
        "the kick of the readied child (ORM broker) included; BEGIN/COMMIT counted apart. "
        f"Whole run: {elapsed:.0f} s.",
    ]
    return "\n".join(lines)


def host_speed(run: dict[str, Any]) -> str:
    slowdown = run.get("host_slowdown")
    if slowdown is None:
        return "not probed"
    return f"{slowdown:.2f}× slower" + (", set aside" if run.get("slowed") else "")


def details(results: dict[str, Any]) -> str:
    lines = ["", "<details><summary>Details</summary>", "", "```"]
    for broker in ("orm", "redis"):
        r = results[broker]
        for key in ("chain", "chain_no_eager", "raw_chain"):
            c = r[key]
            extra = ""
            if "task_ms_median" in c:
                extra = f", chain end to end {c['task_ms_median']:.1f} ms"
            lines.append(
                f"{broker:5} {key:15} n={c['n']} p50={c['p50_ms']:.2f} ms "
                f"p95={c['p95_ms']:.2f} ms mean={c['mean_ms']:.2f} ms{extra}"
            )
        rounds = zip(r["throughput_runs"], r["raw_throughput_runs"], strict=True)
        for i, (t, raw) in enumerate(rounds, 1):
            lines.append(
                f"{broker:5} round {i}: tasker {t['per_second']:.0f} steps/s "
                f"(host {host_speed(t)}), raw {raw['per_second']:.0f} tasks/s "
                f"(host {host_speed(raw)}), {t['per_second'] / raw['per_second']:.2f}×"
            )
        for key in ("throughput", "raw_throughput"):
            t = r[key]
            extra = (
                f", {t['complete']} complete, {t['retried']} retried, created in "
                f"{t['create_seconds']:.1f} s, {t['kicks_queued']} kicks queued"
                if "complete" in t
                else f", enqueued in {t['enqueue_seconds']:.1f} s"
            )
            lines.append(
                f"{broker:5} {key:15} {t['items']} in {t['seconds']:.2f} s "
                f"= {t['per_second']:.0f}/s (wall incl. worker start {t['wall_seconds']:.2f} s)"
                f"{extra}"
            )
    sql = results["sql"]
    lines.append(
        f"sql   10,000-step template loaded in {sql['load_big_seconds']:.1f} s; create_task: "
        + ", ".join(f"{s:.3f} s" for s in sql["create_big_seconds"])
    )
    for size, c in sql["statements"].items():
        for key in ("first", "later"):
            n, control = count_statements(c[key])
            lines.append(f"sql   {int(size):,}-step task, {key} step: {n} + {control} BEGIN/COMMIT")
            lines += [f"        {' '.join(q.split())[:110]}" for q in c[key]]
    lines += ["```", "", "</details>"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--phase", choices=["orm", "redis", "sql"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--logdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("DATABASE_URL", DEFAULT_URL)
    os.environ.setdefault("BENCH_DB_NAME", "tasker_bench")
    if args.phase:
        run_phase(args.phase, args.out, args.logdir)
        return 0

    started = time.monotonic()
    load_before = os.getloadavg()
    logdir = Path(tempfile.mkdtemp(prefix="tasker-bench-"))
    db_name = os.environ["BENCH_DB_NAME"]
    log(f"recreating database {db_name}; worker logs in {logdir}")
    recreate_database(os.environ["DATABASE_URL"], db_name)
    run_child(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v0", f"--settings={SETTINGS}"],
        phase_env("orm"),
        120,
        "migrate",
    )
    # One probe for the whole run, so that every phase judges its rounds against the
    # same fast time; a few seconds of it before the first phase.
    probe = HostProbe(logdir / "probe.log")
    os.environ["BENCH_PROBE_LOG"] = str(probe.path)
    time.sleep(3)
    results: dict[str, Any] = {}
    try:
        for phase in ("orm", "redis", "sql"):
            out = logdir / f"{phase}.json"
            argv = [PYTHON, str(Path(__file__).resolve()), "--phase", phase]
            argv += ["--out", str(out), "--logdir", str(logdir)]
            left = TOTAL_BUDGET - (time.monotonic() - started)
            timeout = max(min(PHASE_TIMEOUT, left), 1)
            run_child(argv, phase_env("orm" if phase == "sql" else phase), timeout, phase)
            results[phase] = json.loads(out.read_text())
    finally:
        probe.stop()
    sys.path.insert(0, str(ROOT))
    results["load"] = [load_before, os.getloadavg()]
    print(report(results, time.monotonic() - started))
    print(details(results))
    shutil.rmtree(logdir, ignore_errors=True)  # kept when a phase failed, for its logs
    return 0


if __name__ == "__main__":
    sys.exit(main())
