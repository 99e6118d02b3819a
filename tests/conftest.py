"""Shared fixtures: seed template paths, template loading, real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
SEED_DIR = ROOT.parent / "shared" / "seed-templates"
EXAMPLE_TEMPLATES = ROOT / "example_project" / "task_templates"


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    if os.environ.get("DATABASE_URL"):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (runs in the PostgreSQL pass of make test)")
    for item in items:
        if "postgres_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def load_template(db: Any) -> Callable[..., Any]:
    """Load YAML text as a template (handlers of tests.testapp are registered)."""
    from tasker_django.testing import load_test_template

    return load_test_template


def chain_yaml(name: str, n: int, handler: str = "test.noop", **step_keys: Any) -> str:
    """A linear template of ``n`` steps."""
    import yaml

    steps = []
    for i in range(n):
        step: dict[str, Any] = {"name": f"s{i}", "handler_class": handler, **step_keys}
        if i:
            step["depends_on_step"] = f"s{i - 1}"
        steps.append(step)
    return yaml.safe_dump({"name": name, "version": "1.0.0", "step_templates": steps})


class Workers:
    """Real ``manage.py tasker_worker`` processes against the test database."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        settings = connection.settings_dict
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONUNBUFFERED": "1"}
        if connection.vendor == "postgresql":
            env["DATABASE_URL"] = (
                f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"
            )
        else:
            env.pop("DATABASE_URL", None)
            env["TASKER_TEST_SQLITE"] = str(settings["NAME"])
        env.update(extra or {})
        return env

    def start(self, count: int = 1, extra_env: dict[str, str] | None = None) -> None:
        for _ in range(count):
            log = self.tmp_path / f"worker-{len(self.procs)}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "manage.py", "tasker_worker", "--settings=tests.settings"],
                    cwd=ROOT,
                    env=self.env(extra_env),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.procs.append(proc)
            self.logs.append(log)
        deadline = time.monotonic() + 30
        for proc, log in zip(self.procs[-count:], self.logs[-count:], strict=True):
            while b"sweeping every" not in log.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start:\n{log.read_text()}")
                time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # the cluster stops its own children
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # anything left in its session
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        self.procs.clear()

    def output(self) -> str:
        return "\n".join(log.read_text(errors="replace") for log in self.logs)


@pytest.fixture
def workers(transactional_db: Any, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(tmp_path)
    try:
        yield w
    finally:
        w.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
