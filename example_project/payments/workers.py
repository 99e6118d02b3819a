"""Start and stop ``manage.py tasker_worker`` processes (for ``payments_demo`` and
``payments_serve``): the same command you would run under systemd or in a container."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

#: What tasker_worker prints once its cluster runs and its sweeper loop has started.
READY_LINE = b"sweeping every"


def manage_py_command() -> list[str]:
    """The command line that runs this project's ``manage.py``."""
    script = Path(sys.argv[0]).resolve()
    if script.name == "manage.py":
        return [sys.executable, str(script)]
    # Started some other way (django-admin, python -m django): settings come from the env.
    return [sys.executable, "-m", "django"]


def _stop_with_parent() -> Callable[[], None] | None:
    """On Linux, a child that gets SIGTERM when its parent dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None

    def set_parent_death_signal() -> None:
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)

    return set_parent_death_signal


def terminate_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so that ``finally`` blocks stop the workers."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


class WorkerProcesses:
    """``count`` tasker_worker processes, each in its own session.

    With ``log_dir`` their output goes to ``worker-N.log`` files there; otherwise it is
    shared with this process's stdout. Use as a context manager, or call ``stop()``.
    """

    def __init__(self, count: int = 1, log_dir: Path | None = None) -> None:
        self.count = count
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self) -> WorkerProcesses:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if "DJANGO_SETTINGS_MODULE" not in env:  # pragma: no cover (manage.py sets it)
            raise RuntimeError("DJANGO_SETTINGS_MODULE is not set")
        for n in range(self.count):
            out: IO[bytes] | None = None
            if self.log_dir is not None:
                log = self.log_dir / f"worker-{n + 1}.log"
                self.logs.append(log)
                out = log.open("wb")
            try:
                proc = subprocess.Popen(
                    [*manage_py_command(), "tasker_worker"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT if out is not None else None,
                    # Ctrl-C reaches only us; we stop the workers in order (see stop()).
                    start_new_session=True,
                    preexec_fn=_stop_with_parent(),
                )
            finally:
                if out is not None:
                    out.close()
            self.procs.append(proc)
        return self

    def alive(self) -> int:
        """How many of the processes are still running."""
        return sum(1 for proc in self.procs if proc.poll() is None)

    def ready(self) -> bool:
        """Whether every worker has started its sweeper (only known with ``log_dir``)."""
        return bool(self.logs) and all(READY_LINE in log.read_bytes() for log in self.logs)

    def output(self, tail: int = 40) -> str:
        """The last ``tail`` lines of each worker's log."""
        parts = []
        for log in self.logs:
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (the cluster stops its own children), then SIGKILL what is left."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # anything left in its session
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        self.procs.clear()

    def __enter__(self) -> WorkerProcesses:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
