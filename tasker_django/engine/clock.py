"""The engine's notion of "now". Tests swap it to make backoff instant.

Every timestamp the engine writes comes from :func:`now` (never the database's
``NOW()``), so :func:`tasker_django.testing.run_task_to_completion` can move time
forward without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from django.utils import timezone

_now: Callable[[], datetime] = timezone.now


def now() -> datetime:
    return _now()


@contextmanager
def frozen(clock: Callable[[], datetime]) -> Iterator[None]:
    """Use ``clock`` for the engine's "now" inside the block."""
    global _now
    previous, _now = _now, clock
    try:
        yield
    finally:
        _now = previous
