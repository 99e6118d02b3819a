"""django-q2 entry point: ``run_step(step_id)`` runs one kick.

A per-process heartbeat thread keeps the lease of the running step alive, so a
long handler is not mistaken for a lost worker while a killed process loses its
lease within ``LEASE_SECONDS``.
"""

from __future__ import annotations

import logging
import os
import threading

from django.db import close_old_connections, connection

from ..conf import tasker_settings
from .runner import Claim, extend_lease, run_step_loop, worker_id

logger = logging.getLogger("tasker_django.worker")


class _Heartbeat:
    """Extends the lease of the step this process is running, every LEASE_SECONDS / 3."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: Claim | None = None
        self.wake = threading.Event()
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self.loop, name="tasker-heartbeat", daemon=True)
        self.thread.start()

    def set(self, c: Claim | None) -> None:
        with self.lock:
            self.current = c

    def loop(self) -> None:
        while True:
            interval = max(float(tasker_settings.LEASE_SECONDS) / 3, 0.2)
            self.wake.wait(interval)
            self.wake.clear()
            with self.lock:
                c = self.current
            if c is None:
                continue
            try:
                extend_lease(c)
            except Exception:
                logger.exception("heartbeat for step %s failed", c.step_id)
                close_old_connections()


_heartbeat: _Heartbeat | None = None


def _get_heartbeat() -> _Heartbeat:
    global _heartbeat
    if _heartbeat is None or _heartbeat.pid != os.getpid():
        _heartbeat = _Heartbeat()
    return _heartbeat


def run_step(step_id: int, *args: object) -> int:
    """Run the step behind one kick (and, eagerly, children it readies)."""
    hb = _get_heartbeat()
    try:
        return run_step_loop(
            int(step_id),
            worker=worker_id(),
            on_claim=hb.set,
            on_release=lambda: hb.set(None),
        )
    except Exception:
        logger.exception("running step %s failed inside the engine", step_id)
        # The step stays in_progress; its lease runs out and the sweeper retries it.
        if connection.in_atomic_block:
            raise
        return 0
