"""Handlers the test suite's templates use; worker processes discover them too."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tasker_django import PermanentError, RetryableError, StepHandler
from tasker_django.testing import handlers as _testing_handlers  # noqa: F401


class Noop(StepHandler, name="test.noop"):
    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        return {"step": step.name, "parents": sorted(sequence.step_results)}


class Flaky(StepHandler, name="test.flaky"):
    """Fails retryably while attempts <= fail_times (retry_after from config)."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        if step.attempts <= int(self.config.get("fail_times", 1)):
            raise RetryableError(
                f"flaky attempt {step.attempts}",
                error_category="test",
                retry_after=self.config.get("retry_after"),
            )
        return {"attempts": step.attempts}


class Crashy(StepHandler, name="test.crashy"):
    """Raises a plain exception while attempts <= fail_times."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        if step.attempts <= int(self.config.get("fail_times", 1)):
            raise ValueError(f"plain failure on attempt {step.attempts}")
        return {"attempts": step.attempts}


class Permanent(StepHandler, name="test.permanent"):
    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        raise PermanentError(
            self.config.get("message", "card declined"),
            error_code="CARD_DECLINED",
            error_category="payment",
            context={"step": step.name},
        )


class Sleepy(StepHandler, name="test.sleepy"):
    """Sleeps ``seconds`` (only on attempts <= sleep_times); writes a marker with its pid."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        marker_dir = self.config.get("marker_dir") or task.context.get("marker_dir")
        if marker_dir:
            Path(marker_dir, f"{step.id}-{step.attempts}.pid").write_text(str(os.getpid()))
        if step.attempts <= int(self.config.get("sleep_times", 1)):
            time.sleep(float(self.config.get("seconds", 1)))
        return {"slept": True, "attempts": step.attempts, "pid": os.getpid()}


class BadResult(StepHandler, name="test.bad_result"):
    def process(self, task: Any, sequence: Any, step: Any) -> Any:
        return {"when": object()}


class EchoParents(StepHandler, name="test.echo"):
    """Returns the context value ``value`` plus every parent's results."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        return {"value": task.context.get("value"), "parents": dict(sequence.step_results)}


class Heartbeat(StepHandler, name="test.heartbeat"):
    """Logs a line and renews its lease; returns the lease seen after the renewal."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        from tasker_django.models import WorkflowStep

        before = WorkflowStep.objects.get(pk=step.id).lease_expires_at
        time.sleep(0.05)
        self.heartbeat()
        after = WorkflowStep.objects.get(pk=step.id).lease_expires_at
        self.logger.info("charging card")
        return {"renewed": after > before}


class CardDeclinedError(Exception):
    """A gateway exception a template lists under error_handling.permanent_errors."""


class NetworkError(Exception):
    """A gateway exception a template lists under error_handling.retryable_errors."""


class Raiser(StepHandler, name="test.raiser"):
    """Raises the exception named by config ``raise`` (while attempts <= fail_times)."""

    ERRORS: dict[str, type[Exception]] = {
        "CardDeclinedError": CardDeclinedError,
        "NetworkError": NetworkError,
        "ValueError": ValueError,
    }

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        if step.attempts <= int(self.config.get("fail_times", 99)):
            raise self.ERRORS[self.config["raise"]](f"{self.config['raise']} from the gateway")
        return {"attempts": step.attempts}


ESCALATIONS: list[dict[str, Any]] = []


def record_escalation(event: dict[str, Any]) -> None:
    """An escalation action (TASKER['ESCALATION_ACTIONS']) for tests."""
    ESCALATIONS.append(event)


class Publisher(StepHandler, name="test.publisher"):
    """Publishes the custom event named in config ``event`` with config ``payload``."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        self.publish_event(self.config["event"], self.config.get("payload") or {})
        return {"published": self.config["event"]}
