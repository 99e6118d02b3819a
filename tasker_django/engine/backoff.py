"""Retry delays. Pure: no Django, no database."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any


def retry_delay(
    attempt: int,
    backoff: Mapping[str, Any],
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    ``retry_after`` (from :class:`RetryableError`) wins but is capped by
    ``max_delay``. Otherwise ``strategy`` picks exponential
    (``initial * multiplier ** (attempt - 1)``), linear (``initial * attempt``) or
    fixed (``initial``), capped by ``max_delay``; with ``jitter`` the delay is
    drawn uniformly from [delay / 2, delay] ("equal jitter"), so retries of many
    steps spread out but never come earlier than half the nominal delay.
    """
    initial = max(float(backoff.get("initial_delay", 1.0)), 0.0)
    maximum = max(float(backoff.get("max_delay", 300.0)), 0.0)
    if retry_after is not None:
        return min(max(float(retry_after), 0.0), maximum)
    strategy = backoff.get("strategy", "exponential")
    multiplier = float(backoff.get("multiplier", 2.0))
    n = max(attempt, 1)
    if strategy == "fixed":
        delay = initial
    elif strategy == "linear":
        delay = initial * n
    else:
        try:
            delay = initial * multiplier ** (n - 1)
        except OverflowError:
            delay = maximum
    delay = min(delay, maximum)
    if backoff.get("jitter", True) and delay > 0:
        delay = (rng or random).uniform(delay / 2, delay)
    return delay
