"""Template metrics the example handlers record (``monitoring.metrics`` of the seed templates).

``@measured(...)`` wraps a handler's ``process``: after each attempt it records the
attempt's duration in ``step_execution_time`` and the named histograms, the success
share of the step's recent attempts (this one included) in the ``rate`` gauge and
that of the template's in ``step_success_rate``, and adds 1 to the ``volume``
counter on success. Every
record passes ``required=False``: a template that does not declare the metric (the
example project's own templates) records nothing, so the same handlers serve every
template.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from tasker_django.engine import clock
from tasker_django.monitoring.alerts import setting_seconds
from tasker_django.monitoring.values import builtin_values

H = TypeVar("H")


def _success_shares(task: Any, step: Any, succeeded: bool) -> tuple[float, float]:
    """Shares of the step's and of the template's attempts in the alert window that
    succeeded, this one included."""
    now = clock.now()
    since = now - timedelta(seconds=setting_seconds("ALERT_WINDOW"))
    values = builtin_values(task.namespace, task.name, since, now)

    def share(attempts_key: str, rate_key: str) -> float:
        attempts = values.get(attempts_key, 0.0)
        good = values.get(rate_key, 0.0) * attempts
        return (good + (1 if succeeded else 0)) / (attempts + 1)

    return (
        share(f"{step.name}_attempts", f"{step.name}_success_rate"),
        share("step_attempts", "step_success_rate"),
    )


def _record(
    handler: Any,
    task: Any,
    step: Any,
    *,
    durations: tuple[str, ...],
    rate: str | None,
    seconds: float,
    succeeded: bool,
) -> None:
    if handler._tasker_record_metric is None:  # called outside a worker (a unit test)
        return
    for name in durations:
        handler.record_metric(name, seconds, required=False)
    step_share, template_share = _success_shares(task, step, succeeded)
    if rate is not None:
        handler.record_metric(rate, step_share, required=False)
    handler.record_metric("step_success_rate", template_share, required=False)


def measured(
    *durations: str, rate: str | None = None, volume: str | None = None
) -> Callable[[type[H]], type[H]]:
    """Class decorator: record ``step_execution_time`` and ``durations`` (histograms),
    ``rate`` and ``step_success_rate`` (gauges) and ``volume`` (a counter, on success)."""
    names = ("step_execution_time", *durations)

    def wrap(cls: type[H]) -> type[H]:
        original = cls.process  # type: ignore[attr-defined]

        @functools.wraps(original)
        def process(self: Any, task: Any, sequence: Any, step: Any) -> Any:
            started = time.monotonic()
            try:
                result = original(self, task, sequence, step)
            except Exception:
                _record(
                    self,
                    task,
                    step,
                    durations=names,
                    rate=rate,
                    seconds=time.monotonic() - started,
                    succeeded=False,
                )
                raise
            _record(
                self,
                task,
                step,
                durations=names,
                rate=rate,
                seconds=time.monotonic() - started,
                succeeded=True,
            )
            if volume is not None and self._tasker_record_metric is not None:
                self.record_metric(volume, required=False)
            return result

        cls.process = process  # type: ignore[attr-defined]
        return cls

    return wrap
