"""Siblings a worker holds back instead of kicking (eager continuation).

When a finishing step readies several children, the worker continues with one of
them itself. Without holding, it kicks the others at once, and each kick costs a
broker message, a claim, and often a second worker contending on the same task's
rows. A worker that holds them runs them itself, one after the other, when the
step it continued with is done, as long as the eager budget lasts.

Holding never delays a sibling by more than ``TASKER["EAGER_HOLD_SECONDS"]``: a
thread per process kicks every held step that the worker has not started by then,
so siblings of a slow step still run in parallel on other workers. Whatever is
still held when the worker's eager run ends is kicked at once.

A held step is already ``enqueued`` in the database (I1): if the worker dies while
holding it, the sweeper kicks it again after ``REKICK_AFTER_SECONDS``, as it does
for any lost kick. Taking a held step is an ordinary compare-and-set claim (I2), so
a step the thread kicked meanwhile is run once, by whichever worker claims first.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass

from django.db import connections

from . import dispatch

logger = logging.getLogger(__name__)


@dataclass
class _Batch:
    """Step ids one finish readied and the worker kept, with how to kick them."""

    ids: list[int]
    priority: int
    batch_size: int | None
    deadline: float
    #: Held inside ``dispatch.suppressed()``: nobody kicks these.
    suppressed: bool = False


class Held:
    """The steps one eager run holds. Not shared between threads of the run."""

    def __init__(self) -> None:
        self._timer: _Timer | None = None
        self._batches: list[_Batch] = []

    def hold(self, ids: list[int], priority: int, batch_size: int | None, seconds: float) -> None:
        if not ids:
            return
        timer = self._timer = self._timer or timer_for_process()
        batch = _Batch(
            list(ids), priority, batch_size, time.monotonic() + seconds, dispatch.is_suppressed()
        )
        self._batches.append(batch)
        timer.watch(batch)

    def take(self) -> int | None:
        """The oldest held step, now no longer held; None when nothing is held."""
        timer = self._timer
        if timer is None:
            return None
        with timer.lock:
            while self._batches:
                batch = self._batches[0]
                if batch.ids:
                    return batch.ids.pop(0)
                self._batches.pop(0)
        return None

    def peek(self) -> int | None:
        """The step ``take`` would return, still held."""
        timer = self._timer
        if timer is None:
            return None
        with timer.lock:
            return next((b.ids[0] for b in self._batches if b.ids), None)

    def discard(self, step_id: int) -> None:
        """No longer hold ``step_id`` (it was claimed another way)."""
        timer = self._timer
        if timer is None:
            return
        with timer.lock:
            for batch in self._batches:
                if step_id in batch.ids:
                    batch.ids.remove(step_id)

    def release(self) -> None:
        """Kick every step still held (the eager run is over)."""
        timer = self._timer
        if timer is None:
            return
        with timer.lock:
            batches = [b for b in self._batches if b.ids]
            taken = [(b, b.ids[:]) for b in batches]
            for b in batches:
                b.ids.clear()
            self._batches.clear()
        for batch, ids in taken:
            _send(ids, batch)


def _send(ids: list[int], batch: _Batch) -> None:
    if not batch.suppressed:
        dispatch.send_kicks(ids, batch.priority, batch_size=batch.batch_size)


class _Timer:
    """One thread per process that kicks held steps whose deadline passed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self._wake = threading.Condition(self.lock)
        self._heap: list[tuple[float, int, _Batch]] = []
        self._seq = itertools.count()
        self._thread = threading.Thread(target=self._loop, name="tasker-held-kicks", daemon=True)
        self._thread.start()

    def watch(self, batch: _Batch) -> None:
        with self.lock:
            first = not self._heap or batch.deadline < self._heap[0][0]
            heapq.heappush(self._heap, (batch.deadline, next(self._seq), batch))
            if first:
                self._wake.notify()

    def _loop(self) -> None:
        while True:
            due: list[tuple[_Batch, list[int]]] = []
            with self.lock:
                while not self._heap:
                    self._wake.wait()
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, batch = heapq.heappop(self._heap)
                    if batch.ids:
                        due.append((batch, batch.ids[:]))
                        batch.ids.clear()
                # Batches the worker emptied meanwhile need no wake-up of their own.
                while self._heap and not self._heap[0][2].ids:
                    heapq.heappop(self._heap)
                if not due:
                    if self._heap:
                        self._wake.wait(self._heap[0][0] - now)
                    continue
            try:
                for batch, ids in due:
                    try:
                        _send(ids, batch)
                    except Exception:  # the sweeper kicks them after REKICK_AFTER_SECONDS
                        logger.exception("could not kick held steps %s", ids)
            finally:
                # The ORM broker's kicks open a connection in this thread: this thread
                # runs rarely (only for slow steps), so it keeps no connection open.
                connections.close_all()


_timer: _Timer | None = None
_timer_lock = threading.Lock()


def timer_for_process() -> _Timer:
    """The process's timer thread, started on first use (again after a fork)."""
    global _timer
    with _timer_lock:
        if _timer is None or _timer.pid != os.getpid():
            _timer = _Timer()
        return _timer
