"""Claiming, running and finishing one step (I2, I3, I5, I6, I11).

The hot path costs a constant number of statements whatever the task size:
claim (1), load step + task + template + parents (1), then one transaction that
stores the result (1), records the attempt (1), readies the children (1),
updates the task (1), logs the events (1) and sends the kicks (0-1, in the same
transaction on the ORM broker).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.utils.dateparse import parse_datetime

from ..conf import tasker_settings
from ..handlers.errors import PermanentError, RetryableError
from ..handlers.registry import registry
from ..handlers.services import injected_timeout
from ..handlers.views import StepSequence, StepView, TaskView
from ..models import (
    AttemptOutcome,
    NamedStep,
    NamedTask,
    Namespace,
    StepAttempt,
    StepStatus,
    Task,
    TaskEvent,
    TaskStatus,
    WorkflowStep,
    WorkflowStepEdge,
)
from ..monitoring.recording import record_for_step
from ..security import crypto
from ..security.audit import audit_events, audits
from . import clock, dispatch, pg
from .backoff import retry_delay
from .events import Event, after_commit, emit_on_commit, send_signals
from .holding import Held
from .policy import error_type, policy_for

logger = logging.getLogger("tasker_django.engine")

RUNNING_TASK_STATUSES = (TaskStatus.PENDING.value, TaskStatus.IN_PROGRESS.value)

STEP = WorkflowStep._meta.db_table
TASK = Task._meta.db_table
EDGE = WorkflowStepEdge._meta.db_table


class StepLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes a handler's log lines with its task and step ids (also set as ``extra``)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **(kwargs.get("extra") or {})}
        return f"[task {extra.get('task_id')} step {extra.get('step_id')}] {msg}", kwargs


_worker_ids: dict[int, str] = {}


def worker_id() -> str:
    """``host:pid`` of this process (cached per pid: a fork gets its own)."""
    pid = os.getpid()
    wid = _worker_ids.get(pid)
    if wid is None:
        wid = _worker_ids[pid] = f"{socket.gethostname()}:{pid}"
    return wid


class StepTimeout(Exception):
    """The handler ran past the step's ``timeout_seconds``."""


class HandlerResultError(Exception):
    """The handler returned something that is not a JSON object."""


def _dt(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _json_param(value: Any) -> Any:
    return connection.ops.adapt_json_value(value, None)


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, cls=DjangoJSONEncoder)


def _results_text(loaded: Loaded, outcome: Outcome) -> str | None:
    """The results to store, as JSON text: encrypted when the task's data is."""
    sealed = crypto.sealed_results(loaded, outcome.results)
    if sealed is outcome.results and outcome.results_text is not None:
        return outcome.results_text
    return _json_text(sealed)


def _load_json(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode()
    if isinstance(value, str):
        return json.loads(value)
    return value


# ---------------------------------------------------------------------------
# Claim (I2, I6)
# ---------------------------------------------------------------------------


@dataclass
class Claim:
    step_id: int
    task_id: int
    attempt: int
    claimed_at: datetime
    worker: str


def claim(step_id: int, worker: str | None = None) -> Claim | None:
    """Compare-and-set ``enqueued -> in_progress``, counting the attempt first.

    Returns None when another worker got there first (a duplicate delivery), the
    step is not enqueued any more, or its task stopped or is past its deadline.
    """
    worker = worker or worker_id()
    now = clock.now()
    lease = now + timedelta(seconds=float(tasker_settings.LEASE_SECONDS))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {STEP}
               SET status = %s, attempts = attempts + 1, lease_expires_at = %s,
                   worker_id = %s, claimed_at = %s, started_at = COALESCE(started_at, %s),
                   next_attempt_at = NULL, updated_at = %s
             WHERE id = %s AND status = %s
               AND EXISTS (SELECT 1 FROM {TASK} t
                            WHERE t.id = {STEP}.task_id AND t.status IN (%s, %s)
                              AND (t.deadline_at IS NULL OR t.deadline_at > %s))
            RETURNING task_id, attempts
            """,  # noqa: S608
            [
                StepStatus.IN_PROGRESS.value,
                _dt(lease),
                worker[:255],
                _dt(now),
                _dt(now),
                _dt(now),
                step_id,
                StepStatus.ENQUEUED.value,
                *RUNNING_TASK_STATUSES,
                _dt(now),
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return Claim(step_id=step_id, task_id=row[0], attempt=row[1], claimed_at=now, worker=worker)


# ---------------------------------------------------------------------------
# Load (one query)
# ---------------------------------------------------------------------------


@dataclass
class Loaded:
    claim: Claim
    step: dict[str, Any]
    task: dict[str, Any]
    parents: list[dict[str, Any]] = field(default_factory=list)


_LOAD_SQL = f"""
SELECT s.name, s.position, s.max_attempts, s.retryable, s.inputs, s.timeout_seconds,
       t.status, t.context, t.tags, t.initiator, t.source_system, t.reason, t.priority,
       t.total_steps, nt.name, nt.version, n.name,
       ns.handler_class, ns.handler_config, ns.backoff,
       p.id, p.name, p.status, p.results, p.attempts, p.max_attempts, p.inputs, p.position,
       p.retryable, nt.id, nt.content_hash
  FROM {STEP} s
  JOIN {TASK} t ON t.id = s.task_id
  JOIN {NamedTask._meta.db_table} nt ON nt.id = t.named_task_id
  JOIN {Namespace._meta.db_table} n ON n.id = nt.namespace_id
  JOIN {NamedStep._meta.db_table} ns ON ns.id = s.named_step_id
  LEFT JOIN {EDGE} e ON e.to_step_id = s.id
  LEFT JOIN {STEP} p ON p.id = e.from_step_id
 WHERE s.id = %s
 ORDER BY p.position
"""  # noqa: S608


def load(c: Claim) -> Loaded:
    with connection.cursor() as cursor:
        cursor.execute(_LOAD_SQL, [c.step_id])
        rows = cursor.fetchall()
    return _loaded(c, rows)


def _loaded(c: Claim, rows: list[tuple[Any, ...]]) -> Loaded:
    r = rows[0]
    step = {
        "id": c.step_id,
        "name": r[0],
        "position": r[1],
        "max_attempts": r[2],
        "retryable": bool(r[3]),
        "inputs": _load_json(r[4]) or {},
        "timeout_seconds": r[5],
        "attempts": c.attempt,
        "handler_class": r[17],
        "handler_config": _load_json(r[18]) or {},
        "backoff": _load_json(r[19]),
        "named_task_id": r[29],
        "template_hash": r[30],
    }
    task = {
        "id": c.task_id,
        "status": r[6],
        "context": _load_json(r[7]) or {},
        "tags": _load_json(r[8]) or [],
        "initiator": r[9] or None,
        "source_system": r[10] or None,
        "reason": r[11] or None,
        "priority": r[12],
        "total_steps": r[13],
        "name": r[14],
        "version": r[15],
        "namespace": r[16],
    }
    parents = [_parent(p[20:29]) for p in rows if p[20] is not None]
    loaded = Loaded(claim=c, step=step, task=task, parents=parents)
    if crypto.MARKER in task["context"]:  # security.encryption: decrypt right after load
        crypto.open_loaded(loaded)
    return loaded


def _parent(p: Any) -> dict[str, Any]:
    """A parent as the load query returns it: id, name, status, results, attempts,
    max_attempts, inputs, position, retryable."""
    return {
        "id": p[0],
        "name": p[1],
        "status": p[2],
        "results": _load_json(p[3]),
        "attempts": p[4],
        "max_attempts": p[5],
        "inputs": _load_json(p[6]) or {},
        "position": p[7],
        "retryable": bool(p[8]),
    }


def claim_and_load(step_id: int, worker: str | None = None) -> Loaded | None:
    """Claim the step and load what the handler needs: one statement on PostgreSQL."""
    worker = worker or worker_id()
    if connection.vendor != "postgresql":
        c = claim(step_id, worker)
        return None if c is None else _throttle(load(c))

    now = clock.now()
    lease = now + timedelta(seconds=float(tasker_settings.LEASE_SECONDS))
    rows = pg.claim_and_load(step_id, worker, now, lease)
    if not rows:
        return None
    c = Claim(
        step_id=step_id, task_id=rows[0][0], attempt=rows[0][1], claimed_at=now, worker=worker
    )
    loaded = _loaded(c, [row[4:] for row in rows])
    if rows[0][2]:  # the statement started the task (the row read shows it pending)
        loaded.task["status"] = TaskStatus.IN_PROGRESS.value
        loaded.task["started_now"] = True
        loaded.task["started_logged"] = bool(rows[0][3])
    return _throttle(loaded)


def _policy(loaded: Loaded) -> Any:

    return policy_for(loaded.step["named_task_id"], loaded.step["template_hash"])


def _throttle(loaded: Loaded) -> Loaded | None:
    """None when the template's concurrency limits sent the claim back (engine/limits.py)."""
    policy = _policy(loaded)
    if policy.throttled:
        from .limits import over_limit

        if over_limit(loaded, policy):
            if loaded.task.get("started_now"):
                mark_task_started(loaded)  # the claim statement started the task
            return None
    return loaded


# ---------------------------------------------------------------------------
# Execute
# ---------------------------------------------------------------------------


@dataclass
class Outcome:
    outcome: str  # an AttemptOutcome value
    results: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    retryable: bool = False
    retry_after: float | None = None
    duration_ms: float = 0.0
    #: ``results`` as JSON text (what the finish statement stores), when known.
    results_text: str | None = None


class _Alarm:
    """The SIGALRM handler of the steps run_step_loop runs.

    Installed once per loop (:func:`_alarm_scope`), not per step: swapping signal
    handlers costs more than the rest of the time limit. While a step runs, ``message``
    is set and an alarm raises :class:`StepTimeout`; otherwise it goes to the handler
    that was installed before (django-q2's own timeout, or the default).
    """

    def __init__(self) -> None:
        self.installed = False
        self.previous: Any = None
        self.message: str | None = None

    def handle(self, signum: int, frame: Any) -> None:
        if self.message is not None:
            raise StepTimeout(self.message)
        previous = self.previous
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGALRM)


_alarm = _Alarm()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _alarm_scope() -> Iterator[None]:
    """Install the steps' SIGALRM handler for the duration of one run_step_loop."""
    if _alarm.installed or not _main_thread():
        yield
        return
    _alarm.previous = signal.signal(signal.SIGALRM, _alarm.handle)
    _alarm.installed = True
    try:
        yield
    finally:
        _alarm.installed = False
        _alarm.message = None
        signal.signal(signal.SIGALRM, _alarm.previous)
        _alarm.previous = None


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise StepTimeout in the main thread after ``seconds``.

    django-q2 arms its own SIGALRM for the whole task; it is saved and re-armed
    with the time it has left afterwards.
    """
    if not seconds or seconds <= 0 or not _main_thread():
        yield
        return
    message = f"step ran past its timeout of {seconds:g} s"
    with nullcontext() if _alarm.installed else _alarm_scope():
        started = time.monotonic()
        previous_remaining = signal.alarm(0)
        limit = float(seconds)
        if previous_remaining:
            limit = min(limit, max(previous_remaining - 0.5, 0.1))
        outer_message, _alarm.message = _alarm.message, message
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            _alarm.message = outer_message  # a step run inside a handler's step
            if previous_remaining:
                left = previous_remaining - (time.monotonic() - started)
                signal.alarm(max(math.ceil(left), 1))


def _error_info(exc: BaseException) -> dict[str, Any]:

    info: dict[str, Any] = {
        "error_class": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc)[:10000],
        "error_code": "",
        "error_category": "",
        "context": {},
    }
    if isinstance(exc, PermanentError | RetryableError):
        info["error_code"] = getattr(exc, "error_code", None) or ""
        info["error_category"] = exc.error_category or ""
        try:
            json.dumps(exc.context, allow_nan=False)
            info["context"] = dict(exc.context)
        except (TypeError, ValueError):
            info["context"] = {"repr": repr(exc.context)[:2000]}
    return info


def build_views(loaded: Loaded) -> tuple[Any, Any, Any]:

    crypto.check_opened(loaded)  # a value that did not decrypt fails the step for good
    t = loaded.task
    task_view = TaskView(
        id=t["id"],
        # Copies: a handler that changes them must not change what the next step of
        # an eager continuation sees (it reuses this task's loaded values).
        context=copy.deepcopy(t["context"]),
        tags=copy.deepcopy(t["tags"]),
        namespace=t["namespace"],
        name=t["name"],
        version=t["version"],
        initiator=t["initiator"],
        source_system=t["source_system"],
        reason=t["reason"],
        priority=t["priority"],
    )
    s = loaded.step
    step_view = StepView(
        id=s["id"],
        name=s["name"],
        inputs=s["inputs"],
        attempts=s["attempts"],
        max_attempts=s["max_attempts"],
        results=None,
        status=StepStatus.IN_PROGRESS.value,
        retryable=s["retryable"],
    )
    parent_views = tuple(
        StepView(
            id=p["id"],
            name=p["name"],
            inputs=p["inputs"],
            attempts=p["attempts"],
            max_attempts=p["max_attempts"],
            results=p["results"],
            status=p["status"],
            retryable=p["retryable"],
        )
        for p in loaded.parents
    )
    sequence = StepSequence(
        steps=(*parent_views, step_view),
        current=step_view,
        task_id=t["id"],
        task_total_steps=t["total_steps"],
        current_index=s["position"],
    )
    return task_view, sequence, step_view


def execute(loaded: Loaded, *, heartbeat: Callable[[], None] | None = None) -> Outcome:
    """Run the handler; never raises for handler problems (they become outcomes)."""

    s = loaded.step
    started = time.monotonic()
    policy = _policy(loaded)
    timeout = s["timeout_seconds"]
    if timeout and policy.timeout_buffer:
        timeout = float(timeout) + policy.timeout_buffer
    try:
        try:
            entry = registry.resolve(s["handler_class"], namespace=loaded.task["namespace"])
            handler = entry.instantiate(config=s["handler_config"])
        except Exception as exc:
            raise PermanentError(
                f"handler {s['handler_class']!r} could not be loaded: {exc}",
                error_code="HANDLER_NOT_FOUND",
                error_category="configuration",
            ) from exc
        handler._tasker_heartbeat = heartbeat
        handler._tasker_publish_event = lambda name, payload: publish_custom_event(
            loaded, name, payload
        )
        handler._tasker_record_metric = lambda name, value, labels, required: record_for_step(
            loaded, name, value, labels, required
        )
        base_logger = handler.logger
        if isinstance(base_logger, logging.LoggerAdapter):
            base_logger = base_logger.logger
        handler.logger = StepLogger(base_logger, {"task_id": loaded.task["id"], "step_id": s["id"]})
        task_view, sequence, step_view = build_views(loaded)
        injected = injected_timeout(loaded.task["id"], s["name"], loaded.claim.attempt)
        if injected:  # a test scenario's timeout_step (tasker_django.testing.scenarios)
            raise StepTimeout(injected)
        with _time_limit(timeout):
            output = handler.process(task_view, sequence, step_view)
            results = handler.process_results(step_view, output, None)
        elapsed = time.monotonic() - started
        if timeout and elapsed > float(timeout):
            raise StepTimeout(f"step ran {elapsed:.1f} s, past its timeout of {float(timeout):g} s")
        results, results_text = _check_results(results)
    except PermanentError as exc:
        return _failed(AttemptOutcome.PERMANENT_ERROR, exc, started, retryable=False)
    except RetryableError as exc:
        return _failed(
            AttemptOutcome.RETRYABLE_ERROR,
            exc,
            started,
            retryable=True,
            retry_after=exc.retry_after,
        )
    except StepTimeout as exc:
        return _failed(AttemptOutcome.TIMEOUT, exc, started, retryable=True)
    except HandlerResultError as exc:
        return _failed(AttemptOutcome.PERMANENT_ERROR, exc, started, retryable=False)
    except Exception as exc:
        # Not a Tasker error: retryable, recorded with its class and message.
        logger.warning(
            "step %s of task %s raised %s: %s",
            s["id"],
            loaded.task["id"],
            type(exc).__name__,
            exc,
            exc_info=True,
        )
        # ``settings.error_handling: strict``: what nobody classified is permanent.
        retryable = _template_says(loaded, exc, not policy.strict_errors)
        return _failed(
            AttemptOutcome.RETRYABLE_ERROR if retryable else AttemptOutcome.PERMANENT_ERROR,
            exc,
            started,
            retryable=retryable,
        )
    return Outcome(
        outcome=AttemptOutcome.SUCCESS.value,
        results=results,
        duration_ms=(time.monotonic() - started) * 1000,
        results_text=results_text,
    )


def _event_error(message: str, code: str) -> Exception:

    return PermanentError(message, error_code=code, error_category="configuration")


def publish_custom_event(loaded: Loaded, name: str, payload: dict[str, Any]) -> None:
    """Store, log and signal a custom event declared in the step's template.

    The payload must be JSON and match the declared schema. An undeclared name or a
    bad payload raises a :class:`PermanentError` in the handler (codes
    ``UNDECLARED_EVENT`` / ``INVALID_EVENT_PAYLOAD``): retrying would not fix it.
    """
    from jsonschema import Draft202012Validator

    declared = policy_for(loaded.step["named_task_id"], loaded.step["template_hash"]).custom_events
    if name not in declared:
        known = ", ".join(sorted(declared)) or "none"
        raise _event_error(
            f"custom event {name!r} is not declared by the template (declared: {known})",
            "UNDECLARED_EVENT",
        )
    try:
        payload = json.loads(json.dumps(payload, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise _event_error(
            f"custom event {name!r}: payload is not JSON: {exc}", "INVALID_EVENT_PAYLOAD"
        ) from None
    errors = sorted(e.message for e in Draft202012Validator(declared[name]).iter_errors(payload))
    if errors:
        raise _event_error(
            f"custom event {name!r}: payload does not match its schema: " + "; ".join(errors),
            "INVALID_EVENT_PAYLOAD",
        )
    event = _step_event(loaded, f"custom.{name}", event=name, data=payload)
    event.kind = TaskEvent.Kind.EVENT
    emit_on_commit([event], clock.now())  # stored (and audited), signalled and routed


def _template_says(loaded: Loaded, exc: BaseException, default: bool) -> bool:
    """``error_handling.permanent_errors`` / ``retryable_errors`` of the template win."""

    verdict = policy_for(loaded.step["named_task_id"], loaded.step["template_hash"]).classify(exc)
    return default if verdict is None else verdict


def _failed(
    outcome: str,
    exc: BaseException,
    started: float,
    *,
    retryable: bool,
    retry_after: float | None = None,
) -> Outcome:
    return Outcome(
        outcome=str(outcome),
        error=_error_info(exc),
        retryable=retryable,
        retry_after=retry_after,
        duration_ms=(time.monotonic() - started) * 1000,
    )


def _check_results(results: Any) -> tuple[dict[str, Any], str]:
    """The results as they will be read back, and as JSON text."""
    if results is None:
        return {}, "{}"
    if not isinstance(results, dict):
        raise HandlerResultError(
            f"handler must return a JSON object (dict), got {type(results).__name__}"
        )
    try:
        text = json.dumps(results, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise HandlerResultError(f"handler result is not JSON: {exc}") from None
    return json.loads(text), text  # exactly what will be read back


# ---------------------------------------------------------------------------
# Finish (I3, I4, I5, I7)
# ---------------------------------------------------------------------------


#: Names the held step a finish may claim when it readies no child to continue with.
Sibling = Callable[[], int | None] | None


@dataclass
class Finished:
    stored: bool
    kicked: list[int] = field(default_factory=list)
    #: The readied child to run next (eager continuation): an id still to claim, or,
    #: on PostgreSQL, already claimed and loaded by the finish statement.
    eager: int | None = None
    eager_loaded: Loaded | None = None
    task_status: str | None = None
    #: Readied children not kicked: the worker runs them after the eager child
    #: (engine/holding.py), kicked with this priority and batch size.
    held: list[int] = field(default_factory=list)
    held_priority: int = 0
    held_batch_size: int | None = None


def _step_event(
    loaded: Loaded, name: str, at: datetime | None = None, signal: bool = True, **extra: Any
) -> Event:
    s, t = loaded.step, loaded.task
    payload = {
        "task_id": t["id"],
        "step_id": s["id"],
        "task_name": t["name"],
        "step_name": s["name"],
        "namespace": t["namespace"],
        "version": t["version"],
        "attempt": loaded.claim.attempt,
        **extra,
    }
    return Event(
        name=name,
        task_id=t["id"],
        step_id=s["id"],
        payload=payload,
        at=at,
        signal=signal,
        template_ref=(s["named_task_id"], s["template_hash"]),
    )


def _task_event(loaded: Loaded, name: str, **extra: Any) -> Event:
    t = loaded.task
    payload = {
        "task_id": t["id"],
        "task_name": t["name"],
        "namespace": t["namespace"],
        "version": t["version"],
        **extra,
    }
    s = loaded.step
    return Event(
        name=name,
        task_id=t["id"],
        step_id=None,
        payload=payload,
        template_ref=(s["named_task_id"], s["template_hash"]),
    )


def finish(
    loaded: Loaded, outcome: Outcome, *, allow_eager: bool = False, sibling: Sibling = None
) -> Finished:
    """Store the outcome. With ``allow_eager`` a success may claim the step to run next:
    a child it readies or, on PostgreSQL, the held sibling that ``sibling()`` names at
    that moment (engine/holding.py)."""
    if outcome.outcome == AttemptOutcome.SUCCESS:
        finished = _finish_success(loaded, outcome, allow_eager=allow_eager, sibling=sibling)
    else:
        finished = _finish_failure(loaded, outcome)
    policy = _policy(loaded)
    if finished.stored and (
        policy.throttled or policy.max_workflows is not None or policy.continue_on_failure
    ):
        _after_finish(loaded, policy, finished)
    return finished


def _after_finish(loaded: Loaded, policy: Any, finished: Finished) -> None:
    """Limits and failure strategy: free slots, admit waiting tasks, settle."""
    from . import limits

    if policy.continue_on_failure:
        limits.settle_on_commit(loaded.claim.task_id)
    if finished.task_status in (TaskStatus.COMPLETE.value, TaskStatus.ERROR.value):
        limits.task_ended(loaded.step["named_task_id"], policy)
    if policy.throttled:
        limits.release(loaded, policy)


def _record_discarded(loaded: Loaded, outcome: Outcome, now: datetime) -> Finished:
    """The step was cancelled or taken over while the handler ran: drop the result."""
    c = loaded.claim
    try:
        with transaction.atomic():
            StepAttempt.objects.create(
                step_id=c.step_id,
                task_id=c.task_id,
                attempt_number=c.attempt,
                started_at=c.claimed_at,
                finished_at=now,
                duration_ms=outcome.duration_ms,
                outcome=AttemptOutcome.CANCELLED,
                error_message="result discarded: the step was cancelled or taken over "
                "while the handler ran",
                worker=c.worker,
            )
    except IntegrityError:
        pass  # the sweeper already recorded this attempt as lost
    logger.info(
        "task %s step %s attempt %s: late result discarded", c.task_id, c.step_id, c.attempt
    )
    return Finished(stored=False)


def _finish_success_pg(
    loaded: Loaded, outcome: Outcome, *, allow_eager: bool, sibling: Sibling
) -> Finished:

    c = loaded.claim
    now = clock.now()
    completed = _step_event(loaded, "step.completed", duration_ms=round(outcome.duration_ms, 3))
    task_done = _task_event(loaded, "task.completed")
    # security.audit_logging: the statement and the audit records commit together.
    audited = audits(loaded.step["named_task_id"], loaded.step["template_hash"])
    # The finish claims the first child it readies, unless limits must vet each claim.
    policy = _policy(loaded)
    claim_child = allow_eager and not policy.throttled
    results = outcome.results
    with transaction.atomic() if audited else nullcontext():
        stored, task_status, transitioned, ready, picked = pg.finish_success(
            step_id=c.step_id,
            attempt=c.attempt,
            # JSON text (cast in the statement): no adapter objects on the hot path.
            results=_results_text(loaded, outcome),
            now=now,
            claimed=c.claimed_at,
            duration_ms=outcome.duration_ms,
            worker=c.worker,
            # step.started's payload; the statement derives step.completed's (adding
            # duration_ms) and task.completed's (dropping the step's keys) from it.
            payload=_json_text(_step_event(loaded, "step.started").payload),
            eager=claim_child,
            lease=now + timedelta(seconds=float(tasker_settings.LEASE_SECONDS)),
            sibling=sibling() if sibling and claim_child else None,
            children=loaded.step["name"] not in policy.leaves,
        )
        if stored and audited:
            started = _step_event(loaded, "step.started", at=c.claimed_at)
            audit_events([started, completed, *([task_done] if transitioned else [])], now)
    if not stored:
        return _record_discarded(loaded, outcome, now)
    eager = None
    held: list[int] = []
    eager_loaded = _picked_child(loaded, results, picked, now) if picked else None
    if task_status in RUNNING_TASK_STATUSES and ready:
        if allow_eager and eager_loaded is None:
            eager, ready = ready[0], ready[1:]
        held, ready = _hold(ready, allow_eager)
        dispatch.kick_steps(ready, loaded.task["priority"], batch_size=policy.batch_size)
    else:
        ready = []
    signals = [completed, task_done] if transitioned else [completed]
    after_commit(lambda: send_signals(signals))
    return Finished(
        stored=True,
        kicked=ready,
        eager=eager_loaded.claim.step_id if eager_loaded else eager,
        eager_loaded=eager_loaded,
        task_status=task_status,
        **_held(loaded, held),
    )


def _hold(ready: list[int], allow_eager: bool) -> tuple[list[int], list[int]]:
    """(held, to kick): the worker that continues eagerly holds the other children."""
    if allow_eager and float(tasker_settings.EAGER_HOLD_SECONDS or 0) > 0:
        return ready, []
    return [], ready


def _held(loaded: Loaded, held: list[int]) -> dict[str, Any]:
    if not held:
        return {}
    return {
        "held": held,
        "held_priority": loaded.task["priority"],
        "held_batch_size": _policy(loaded).batch_size,
    }


_DONE_PARENT = frozenset({StepStatus.COMPLETE.value, StepStatus.RESOLVED_MANUALLY.value})


def _picked_child(loaded: Loaded, results: Any, picked: list[Any], now: datetime) -> Loaded:
    """The child the finish statement claimed, loaded as claim_and_load() would.

    The statement read the child's parents from its snapshot: the step it finished
    shows as it was, so its status and results are patched in here. Another parent
    that looks unfinished committed after that snapshot (its finish made this child
    wait for the row lock); the child is then read again, as it is for an encrypted
    task, whose values must be decrypted.
    """
    c = loaded.claim
    (child_id, attempt, name, position, max_attempts, retryable, inputs, timeout) = picked[:8]
    handler_class, handler_config, backoff, parents, claimed_at = picked[8:13]
    claim_ = Claim(
        step_id=child_id,
        task_id=c.task_id,
        attempt=attempt,
        claimed_at=parse_datetime(claimed_at) or now,
        worker=c.worker,
    )
    rows = []
    fresh = not loaded.task.get(crypto.ENCRYPTED)
    for p in parents or []:
        if p[0] == c.step_id:
            p = [p[0], p[1], StepStatus.COMPLETE.value, results, c.attempt, *p[5:]]
        elif p[2] not in _DONE_PARENT:
            fresh = False
        rows.append(p)
    if not fresh:
        return load(claim_)
    step = {
        "id": child_id,
        "name": name,
        "position": position,
        "max_attempts": max_attempts,
        "retryable": bool(retryable),
        "inputs": _load_json(inputs) or {},
        "timeout_seconds": timeout,
        "attempts": attempt,
        "handler_class": handler_class,
        "handler_config": _load_json(handler_config) or {},
        "backoff": _load_json(backoff),
        "named_task_id": loaded.step["named_task_id"],
        "template_hash": loaded.step["template_hash"],
    }
    task = {k: v for k, v in loaded.task.items() if k not in ("started_now", "started_logged")}
    task["status"] = TaskStatus.IN_PROGRESS.value
    return Loaded(claim=claim_, step=step, task=task, parents=[_parent(p) for p in rows])


def _finish_success(
    loaded: Loaded, outcome: Outcome, *, allow_eager: bool, sibling: Sibling = None
) -> Finished:
    if connection.vendor == "postgresql":
        return _finish_success_pg(loaded, outcome, allow_eager=allow_eager, sibling=sibling)
    c = loaded.claim
    now = clock.now()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                UPDATE {STEP}
                   SET status = %s, results = %s, completed_at = %s, lease_expires_at = NULL,
                       last_error = NULL, updated_at = %s
                 WHERE id = %s AND status = %s AND attempts = %s
                """,  # noqa: S608
                [
                    StepStatus.COMPLETE.value,
                    _json_param(crypto.sealed_results(loaded, outcome.results)),
                    _dt(now),
                    _dt(now),
                    c.step_id,
                    StepStatus.IN_PROGRESS.value,
                    c.attempt,
                ],
            )
            if cursor.rowcount != 1:
                transaction.set_rollback(True)
                stored = False
            else:
                stored = True
        if not stored:
            pass
        else:
            StepAttempt.objects.create(
                step_id=c.step_id,
                task_id=c.task_id,
                attempt_number=c.attempt,
                started_at=c.claimed_at,
                finished_at=now,
                duration_ms=outcome.duration_ms,
                outcome=AttemptOutcome.SUCCESS,
                worker=c.worker,
            )
            ready = ready_children(c.step_id, now)
            task_status, transitioned = _count_done(c.task_id, now)
            events = [
                _step_event(loaded, "step.started", at=c.claimed_at, signal=False),
                _step_event(loaded, "step.completed", duration_ms=round(outcome.duration_ms, 3)),
            ]
            if transitioned:
                events.append(_task_event(loaded, "task.completed"))
            emit_on_commit(events, now)
            eager = None
            held: list[int] = []
            if task_status in RUNNING_TASK_STATUSES and ready:
                if allow_eager:
                    eager = ready[0]
                    ready = ready[1:]
                held, ready = _hold(ready, allow_eager)
                dispatch.kick_steps(
                    ready, loaded.task["priority"], batch_size=_policy(loaded).batch_size
                )
            else:
                ready = []
    if not stored:
        return _record_discarded(loaded, outcome, now)
    return Finished(
        stored=True, kicked=ready, eager=eager, task_status=task_status, **_held(loaded, held)
    )


def ready_children(step_id: int, now: datetime) -> list[int]:
    """Decrement the children's parent counters; those reaching 0 become enqueued (I4).

    One UPDATE: concurrent parents serialise on the child's row lock and each sees
    the counter the previous one left, so exactly one of them readies the child.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {STEP}
               SET remaining_parents = remaining_parents - 1,
                   status = CASE WHEN remaining_parents = 1 THEN %s ELSE status END,
                   enqueued_at = CASE WHEN remaining_parents = 1 THEN %s ELSE enqueued_at END,
                   updated_at = %s
             WHERE id IN (SELECT to_step_id FROM {EDGE} WHERE from_step_id = %s)
               AND status = %s AND remaining_parents > 0
            RETURNING id, status
            """,  # noqa: S608
            [
                StepStatus.ENQUEUED.value,
                _dt(now),
                _dt(now),
                step_id,
                StepStatus.PENDING.value,
            ],
        )
        rows = cursor.fetchall()
    return sorted(r[0] for r in rows if r[1] == StepStatus.ENQUEUED.value)


def _count_done(task_id: int, now: datetime) -> tuple[str, bool]:
    """Count one more finished step; complete the task when it was the last (I7)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE {TASK}
               SET completed_steps = completed_steps + 1,
                   status = CASE WHEN status IN (%s, %s) AND failed_steps = 0
                                  AND completed_steps + 1 >= total_steps
                                 THEN %s ELSE status END,
                   completed_at = CASE WHEN status IN (%s, %s) AND failed_steps = 0
                                        AND completed_steps + 1 >= total_steps
                                       THEN %s ELSE completed_at END,
                   updated_at = %s
             WHERE id = %s
            RETURNING status, completed_steps, total_steps
            """,  # noqa: S608
            [
                *RUNNING_TASK_STATUSES,
                TaskStatus.COMPLETE.value,
                *RUNNING_TASK_STATUSES,
                _dt(now),
                _dt(now),
                task_id,
            ],
        )
        status, completed, total = cursor.fetchone()
    transitioned = status == TaskStatus.COMPLETE.value and completed == total
    return status, transitioned


def _finish_failure(loaded: Loaded, outcome: Outcome) -> Finished:
    c = loaded.claim
    s = loaded.step
    now = clock.now()
    error = dict(outcome.error or {})
    will_retry = outcome.retryable and s["retryable"] and c.attempt < int(s["max_attempts"])
    next_at = None
    if will_retry:
        backoff = s["backoff"] or tasker_settings.DEFAULT_BACKOFF
        delay = retry_delay(c.attempt, backoff, outcome.retry_after)
        next_at = now + timedelta(seconds=delay)
    new_status = StepStatus.WAITING_FOR_RETRY if will_retry else StepStatus.ERROR
    last_error = {
        **error,
        "outcome": outcome.outcome,
        "attempt": c.attempt,
        "at": now.isoformat(),
    }
    with transaction.atomic():
        stored = (
            WorkflowStep.objects.filter(
                pk=c.step_id, status=StepStatus.IN_PROGRESS, attempts=c.attempt
            ).update(
                status=new_status,
                next_attempt_at=next_at,
                lease_expires_at=None,
                last_error=last_error,
                updated_at=now,
            )
            == 1
        )
        if stored:
            record_attempt(c, outcome, now, error)
            events = [
                _step_event(loaded, "step.started", at=c.claimed_at, signal=False),
                _step_event(
                    loaded,
                    "step.failed",
                    error=error,
                    outcome=outcome.outcome,
                    will_retry=will_retry,
                    duration_ms=round(outcome.duration_ms, 3),
                ),
            ]
            task_status = None
            if will_retry:
                assert next_at is not None
                events.append(
                    _step_event(
                        loaded,
                        "step.retried",
                        next_attempt_at=next_at.isoformat(),
                        delay_seconds=round((next_at - now).total_seconds(), 3),
                    )
                )
            else:
                task_status, failed_now = mark_step_failed(
                    c.task_id, now, stop=not _policy(loaded).continue_on_failure
                )
                if failed_now:
                    events.append(
                        _task_event(loaded, "task.failed", step_name=s["name"], error=error)
                    )
            events.extend(_escalations(loaded, error, will_retry))
            emit_on_commit(events, now)
    if not stored:
        return _record_discarded(loaded, outcome, now)
    log = logger.warning if new_status == StepStatus.ERROR else logger.info
    log(
        "task %s step %s (%s) attempt %s/%s failed: %s: %s%s",
        c.task_id,
        c.step_id,
        s["name"],
        c.attempt,
        s["max_attempts"],
        error.get("error_class"),
        error.get("message"),
        f"; retry at {next_at.isoformat()}" if next_at else "; no retry",
    )
    return Finished(stored=True, task_status=task_status)


def _escalations(loaded: Loaded, error: dict[str, Any], will_retry: bool) -> list[Event]:
    """``error_handling.escalation_rules`` matching this failed attempt, as events.

    Conditions see the task context's fields and: ``retry_count`` (failed attempts
    of this step so far, this one included), ``attempt``, ``max_attempts``,
    ``error_type``, ``error_class``, ``error_code``, ``error_category``,
    ``error_message``, ``step_name``, ``will_retry``.
    """

    policy = policy_for(loaded.step["named_task_id"], loaded.step["template_hash"])
    if not policy.escalations:
        return []
    c, s = loaded.claim, loaded.step
    facts = {
        **loaded.task["context"],
        "retry_count": c.attempt,
        "attempt": c.attempt,
        "max_attempts": s["max_attempts"],
        "error_type": error_type(error),
        "error_class": error.get("error_class") or "",
        "error_code": error.get("error_code") or "",
        "error_category": error.get("error_category") or "",
        "error_message": error.get("message") or "",
        "step_name": s["name"],
        "will_retry": will_retry,
    }
    events = []
    for rule in policy.escalations:
        if rule.condition.evaluate(facts):
            event = _step_event(
                loaded,
                "step.escalated",
                action=rule.action,
                condition=rule.condition.source,
                error=error,
            )
            event.kind = TaskEvent.Kind.EVENT
            events.append(event)
    return events


def record_attempt(c: Claim, outcome: Outcome, now: datetime, error: dict[str, Any]) -> None:
    StepAttempt.objects.create(
        step_id=c.step_id,
        task_id=c.task_id,
        attempt_number=c.attempt,
        started_at=c.claimed_at,
        finished_at=now,
        duration_ms=outcome.duration_ms,
        outcome=outcome.outcome,
        error_class=(error.get("error_class") or "")[:255],
        error_message=error.get("message") or "",
        error_code=(error.get("error_code") or "")[:128],
        error_category=(error.get("error_category") or "")[:128],
        error_context=error.get("context") or {},
        retry_after=outcome.retry_after,
        worker=c.worker,
    )


def mark_step_failed(task_id: int, now: datetime, *, stop: bool = True) -> tuple[str, bool]:
    """A step failed for good: count it and, unless ``stop`` is false
    (``failure_strategy: continue_on_failure``), fail the task."""
    task = Task.objects.select_for_update().only("status", "failed_steps").get(pk=task_id)
    failed_now = stop and task.status in RUNNING_TASK_STATUSES
    Task.objects.filter(pk=task_id).update(
        failed_steps=task.failed_steps + 1,
        status=TaskStatus.ERROR if failed_now else task.status,
        completed_at=now if failed_now else None,
        updated_at=now,
    )
    return (TaskStatus.ERROR.value if failed_now else task.status), failed_now


# ---------------------------------------------------------------------------
# The loop a worker runs for one kick (with eager continuation)
# ---------------------------------------------------------------------------


def mark_task_started(loaded: Loaded) -> None:
    """Start the task at its first claim and store ``task.started``.

    On PostgreSQL the claim statement already set the status (``started_now``).
    """
    if loaded.task.get("started_logged"):
        loaded.task["started_logged"] = False  # signalled once
        send_signals([_task_event(loaded, "task.started")])  # the claim stored the row
        return
    if loaded.task.get("started_now"):
        changed, now = 1, clock.now()
    elif loaded.task["status"] != TaskStatus.PENDING.value:
        return  # the common case: the task runs already
    else:
        now = clock.now()
        changed = Task.objects.filter(pk=loaded.task["id"], status=TaskStatus.PENDING).update(
            status=TaskStatus.IN_PROGRESS, started_at=now, updated_at=now
        )
    if changed:
        emit_on_commit([_task_event(loaded, "task.started")], now)


def extend_lease(c: Claim) -> bool:
    """Push the lease of a step this worker still holds; False if it lost it."""
    lease = clock.now() + timedelta(seconds=float(tasker_settings.LEASE_SECONDS))
    return (
        WorkflowStep.objects.filter(
            pk=c.step_id, status=StepStatus.IN_PROGRESS, attempts=c.attempt
        ).update(lease_expires_at=lease)
        == 1
    )


def run_claimed(
    c: Claim, *, allow_eager: bool, heartbeat: Callable[[], None] | None = None
) -> Finished:
    return run_loaded(load(c), allow_eager=allow_eager, heartbeat=heartbeat)


def run_loaded(
    loaded: Loaded,
    *,
    allow_eager: bool,
    heartbeat: Callable[[], None] | None = None,
    sibling: Sibling = None,
) -> Finished:
    c = loaded.claim
    if heartbeat is None:

        def heartbeat() -> None:
            extend_lease(c)

    mark_task_started(loaded)

    send_signals([_step_event(loaded, "step.started")])  # receivers' errors are logged
    outcome = execute(loaded, heartbeat=heartbeat)
    return finish(loaded, outcome, allow_eager=allow_eager, sibling=sibling)


def run_step_loop(
    step_id: int,
    *,
    worker: str | None = None,
    eager: bool | None = None,
    on_claim: Callable[[Claim], None] | None = None,
    on_release: Callable[[], None] | None = None,
) -> int:
    """Claim and run ``step_id``, then keep running readied children within budget.

    Children a step readies besides the one the worker continues with are held
    (engine/holding.py) and run next; those still held when the budget runs out, or
    after ``EAGER_HOLD_SECONDS``, are kicked. Returns the number of steps this call ran.
    """

    worker = worker or worker_id()
    eager = tasker_settings.EAGER_CONTINUATION if eager is None else eager
    max_steps = int(tasker_settings.EAGER_MAX_STEPS)
    hold_seconds = float(tasker_settings.EAGER_HOLD_SECONDS or 0)
    deadline = time.monotonic() + float(tasker_settings.EAGER_MAX_SECONDS)

    def budget_left() -> bool:
        return bool(eager) and ran < max_steps and time.monotonic() < deadline

    ran = 0
    next_id: int | None = step_id
    preloaded: Loaded | None = None
    held = Held()
    try:
        with _alarm_scope():  # the steps' time limits (one handler for the loop)
            while preloaded is not None or next_id is not None:
                loaded = preloaded or claim_and_load(next_id, worker)  # type: ignore[arg-type]
                preloaded = None
                if loaded is None:
                    # Not claimable (a duplicate kick, or a held step that a kick sent
                    # meanwhile let another worker take): on to the next held step.
                    next_id = held.take() if budget_left() else None
                    continue
                ran += 1
                if on_claim:
                    on_claim(loaded.claim)
                try:
                    result = run_loaded(loaded, allow_eager=budget_left(), sibling=held.peek)
                finally:
                    if on_release:
                        on_release()
                preloaded, next_id = result.eager_loaded, result.eager
                if preloaded is not None:
                    held.discard(preloaded.claim.step_id)  # the finish claimed a held sibling
                held.hold(result.held, result.held_priority, result.held_batch_size, hold_seconds)
                if preloaded is None and next_id is None and budget_left():
                    next_id = held.take()
    finally:
        held.release()
    return ran
