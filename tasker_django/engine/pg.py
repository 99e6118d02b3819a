"""PostgreSQL fast paths: claim+load in one statement, finish in one statement.

Same semantics as the portable code in ``runner`` (which SQLite uses), in fewer
round trips: data-modifying CTEs let one statement store the result, record the
attempt, ready the children, count the step on the task and log the events. A
single statement is atomic, so no explicit transaction is needed (I5).
Row locks give the same exactly-once readiness as the portable path (I4): a
concurrent parent's UPDATE of the same child waits, then re-evaluates its
conditions against the row the first one committed.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime
from typing import Any

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections

from ..conf import tasker_settings
from ..models import (
    NamedStep,
    NamedTask,
    Namespace,
    StepAttempt,
    Task,
    TaskEvent,
    TaskStatus,
    WorkflowStep,
    WorkflowStepEdge,
)

STEP = WorkflowStep._meta.db_table
TASK = Task._meta.db_table
EDGE = WorkflowStepEdge._meta.db_table
ATTEMPT = StepAttempt._meta.db_table
EVENT = TaskEvent._meta.db_table


def _compact(sql: str) -> str:
    """The statement without comments and runs of whitespace (shorter in logs and on
    the wire). None of these statements has ``--`` or runs of spaces or punctuation
    inside a string literal."""
    sql = re.sub(r"\s+", " ", re.sub(r"--[^\n]*", "", sql))
    return re.sub(r" ?([(),=<>]) ?", r"\1", sql).strip()


class Statement:
    """A hot statement in PostgreSQL's own ``$n`` placeholders, with their names.

    Written with ``%(name)s`` placeholders and converted once, at import: run through
    ``psycopg.RawCursor``, psycopg sends it as it is instead of parsing the text for
    placeholders on every call (it caches that parse only for queries up to 4 KiB,
    and parsing the finishing statement cost 0.3 ms of Python per step).
    """

    def __init__(self, sql: str) -> None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        self.sql = re.sub(r"%\((\w+)\)s", number, _compact(sql))
        self.names = tuple(names)

    def params(self, values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(values[name] for name in self.names)


_CLAIM_AND_LOAD_SQL = f"""
WITH c AS (
    UPDATE {STEP}
       SET status = 'in_progress', attempts = attempts + 1, lease_expires_at = %(lease)s,
           worker_id = %(worker)s, claimed_at = %(now)s, started_at = COALESCE(started_at, %(now)s),
           next_attempt_at = NULL, updated_at = %(now)s
     WHERE id = %(step)s AND status = 'enqueued'
       AND EXISTS (SELECT 1 FROM {TASK} t
                    WHERE t.id = {STEP}.task_id AND t.status IN ('pending', 'in_progress')
                      AND (t.deadline_at IS NULL OR t.deadline_at > %(now)s))
    RETURNING id, task_id, attempts, name, position, max_attempts, retryable, inputs,
              timeout_seconds, named_step_id
), ts AS (
    -- The first claim of a task starts it,
    UPDATE {TASK}
       SET status = 'in_progress', started_at = %(now)s, updated_at = %(now)s
     WHERE id = (SELECT task_id FROM c) AND status = 'pending'
    RETURNING id, named_task_id
), tev AS (
    -- and logs task.started, unless the template audits: then the runner stores the
    -- event and its audit record together.
    INSERT INTO {EVENT}
        (task_id, step_id, kind, name, from_status, to_status, actor, reason, payload,
         created_at)
    SELECT ts.id, NULL, 'transition', 'task.started', '', '', '', '',
           jsonb_build_object('task_id', ts.id, 'task_name', tnt.name,
                              'namespace', tn.name, 'version', tnt.version),
           %(now)s
      -- Lookups by primary key (OFFSET 0 keeps them apart): as a join, a small table
      -- was scanned whole, reading every template's JSON for the condition below.
      FROM ts,
           LATERAL (SELECT name, version, namespace_id, template
                      FROM {NamedTask._meta.db_table}
                     WHERE id = ts.named_task_id OFFSET 0) tnt,
           LATERAL (SELECT name FROM {Namespace._meta.db_table}
                     WHERE id = tnt.namespace_id OFFSET 0) tn
     WHERE COALESCE(tnt.template #>> '{{sections,security,audit_logging,enabled}}', '')
           <> 'true'
    RETURNING 1
)
SELECT c.task_id, c.attempts, (SELECT count(*) FROM ts), (SELECT count(*) FROM tev),
       c.name, c.position, c.max_attempts, c.retryable, c.inputs, c.timeout_seconds,
       t.status, t.context, t.tags, t.initiator, t.source_system, t.reason, t.priority,
       t.total_steps, nt.name, nt.version, n.name,
       ns.handler_class, ns.handler_config, ns.backoff,
       p.id, p.name, p.status, p.results, p.attempts, p.max_attempts, p.inputs, p.position,
       p.retryable, nt.id, nt.content_hash
  FROM c{{no_flush}}
  JOIN {TASK} t ON t.id = c.task_id
  JOIN {NamedTask._meta.db_table} nt ON nt.id = t.named_task_id
  JOIN {Namespace._meta.db_table} n ON n.id = nt.namespace_id
  CROSS JOIN LATERAL (SELECT handler_class, handler_config, backoff
                        FROM {NamedStep._meta.db_table}
                       WHERE id = c.named_step_id OFFSET 0) ns
  LEFT JOIN {EDGE} e ON e.to_step_id = c.id
  LEFT JOIN {STEP} p ON p.id = e.from_step_id
 ORDER BY p.position
"""  # noqa: S608

#: PG_SYNCHRONOUS_COMMIT off: the statement's transaction commits without waiting for
#: the flush to disk (``set_config(..., true)`` lasts until that commit; the session's
#: own setting is untouched). The join evaluates it whenever ``c`` claimed a row; when
#: ``c`` claimed none, the statement writes nothing and its commit flushes nothing.
_NO_FLUSH = "(SELECT set_config('synchronous_commit', 'off', true))"

CLAIM_AND_LOAD = Statement(_CLAIM_AND_LOAD_SQL.replace("{no_flush}", ""))
CLAIM_AND_LOAD_NO_FLUSH = Statement(
    _CLAIM_AND_LOAD_SQL.replace("{no_flush}", f" CROSS JOIN {_NO_FLUSH} no_flush")
)


#: The cursor this thread's connection runs these statements on (kept: see _execute;
#: a new connection gets a new one, and the old one goes with its connection).
_local = threading.local()


def _execute(statement: Statement, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Run a hot-path statement as a server-side prepared statement.

    Django's cursors bind parameters on the client, so PostgreSQL would plan these
    large statements on every call; prepared, they are planned once per connection.
    The statement is still logged where Django logs queries (tests count them).
    """
    db = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: no proxy lookups below
    db.ensure_connection()
    raw = db.connection
    prepare = bool(tasker_settings.PG_PREPARED_STATEMENTS)
    if prepare and raw.prepare_threshold is None:
        # Django turns psycopg's preparing off (its own cursors bind on the client and
        # never prepare); psycopg then ignores prepare=True. A huge threshold re-enables
        # explicit preparing without making psycopg prepare anything by itself.
        raw.prepare_threshold = 2**31 - 1
    started = time.monotonic()
    # One cursor per connection, kept: a cursor caches the loaders of the columns it
    # reads, which a fresh cursor builds again on every statement.
    cursor = getattr(_local, "cursor", None)
    if cursor is None or cursor.connection is not raw or cursor.closed:
        cursor = _local.cursor = psycopg.RawCursor(raw)
    cursor.execute(statement.sql, statement.params(params), prepare=prepare)
    rows = cursor.fetchall()
    if db.queries_logged:
        db.queries_log.append({"sql": statement.sql, "time": f"{time.monotonic() - started:.3f}"})
    return rows


def claim_and_load(
    step_id: int, worker: str, now: datetime, lease: datetime
) -> list[tuple[Any, ...]]:
    """Rows as runner.load() reads them, shifted by four leading columns: task_id,
    attempts, 1 when this claim started the task, 1 when it also stored task.started."""
    return _execute(
        CLAIM_AND_LOAD if _synchronous() else CLAIM_AND_LOAD_NO_FLUSH,
        {"step": step_id, "worker": worker[:255], "now": now, "lease": lease},
    )


def _synchronous() -> bool:
    """False when TASKER["PG_SYNCHRONOUS_COMMIT"] is off (see the README)."""
    return bool(tasker_settings.PG_SYNCHRONOUS_COMMIT)


def _sibling_cte(children: bool) -> str:
    """The ``sib`` CTE of the finishing statement (see _finish_success_sql); with
    ``children`` it claims the sibling only when no child was picked."""
    no_pick = " AND NOT EXISTS (SELECT 1 FROM pick)" if children else ""
    return f"""), sib AS (
    -- No child to continue with: claim the sibling the worker holds (see
    -- engine/holding.py), if it is still enqueued, as the claim statement would.
    UPDATE {STEP} s
       SET status = 'in_progress', attempts = s.attempts + 1, lease_expires_at = %(lease)s,
           worker_id = %(worker)s, claimed_at = %(now)s,
           started_at = COALESCE(s.started_at, %(now)s), next_attempt_at = NULL,
           updated_at = %(now)s
      FROM done, t
     WHERE %(eager)s AND s.id = %(sibling)s AND s.status = 'enqueued'
       AND s.task_id = done.task_id{no_pick}
       AND t.status IN ('pending', 'in_progress')
       AND (t.deadline_at IS NULL OR t.deadline_at > %(now)s)
    RETURNING s.id, s.status, s.attempts, s.name, s.position, s.max_attempts, s.retryable,
              s.inputs, s.timeout_seconds, s.named_step_id, s.claimed_at
"""  # noqa: S608


#: The ``pick`` and ``kids`` CTEs of the finishing statement (see _finish_success_sql).
_CHILDREN_CTES = f"""), pick AS (
    -- Eager continuation: the first child this step readies is claimed right here
    -- (pending -> in_progress, the attempt counted), as the claim statement would,
    -- while the task still runs. Readiness is decided row by row below; the pick is
    -- only a candidate (a child another parent readies concurrently stays enqueued).
    -- Its claim time is not before any parent's completion: another parent's worker
    -- may have taken its `now` after this one and still committed first.
    SELECT k.id, GREATEST(%(now)s, (SELECT max(p.completed_at) FROM {EDGE} pe
                                      JOIN {STEP} p ON p.id = pe.from_step_id
                                     WHERE pe.to_step_id = k.id)) AS at
      FROM {EDGE} e JOIN {STEP} k ON k.id = e.to_step_id, t
     WHERE %(eager)s AND e.from_step_id = %(step)s
       AND k.status = 'pending' AND k.remaining_parents = 1
       AND t.status IN ('pending', 'in_progress')
       AND (t.deadline_at IS NULL OR t.deadline_at > %(now)s)
     ORDER BY k.id LIMIT 1
), kids AS (
    -- A picked child's remaining_parents is 1 here: the snapshot showed 1 and only
    -- a concurrent parent could lower it, which would have enqueued it instead.
    UPDATE {STEP} k
       SET remaining_parents = k.remaining_parents - 1,
           status = CASE WHEN k.remaining_parents <> 1 THEN k.status
                         WHEN k.id = pick.id THEN 'in_progress' ELSE 'enqueued' END,
           enqueued_at = CASE WHEN k.remaining_parents = 1 THEN %(now)s ELSE k.enqueued_at END,
           attempts = CASE WHEN k.id = pick.id THEN k.attempts + 1 ELSE k.attempts END,
           lease_expires_at = CASE WHEN k.id = pick.id THEN %(lease)s
                                   ELSE k.lease_expires_at END,
           worker_id = CASE WHEN k.id = pick.id THEN %(worker)s ELSE k.worker_id END,
           claimed_at = CASE WHEN k.id = pick.id THEN pick.at ELSE k.claimed_at END,
           started_at = CASE WHEN k.id = pick.id THEN COALESCE(k.started_at, pick.at)
                             ELSE k.started_at END,
           next_attempt_at = CASE WHEN k.id = pick.id THEN NULL ELSE k.next_attempt_at END,
           updated_at = %(now)s
      FROM {EDGE} e JOIN done ON e.from_step_id = done.id LEFT JOIN pick ON true
     WHERE k.id = e.to_step_id AND k.status = 'pending' AND k.remaining_parents > 0
    RETURNING k.id, k.status, k.attempts, k.name, k.position, k.max_attempts, k.retryable,
              k.inputs, k.timeout_seconds, k.named_step_id, k.claimed_at
"""  # noqa: S608

#: The claimed child or sibling, a column of the finishing statement's result.
_PICKED = f"""-- The claimed child or sibling, loaded as the claim statement would (its parents
       -- as this statement's snapshot shows them: the runner patches in the step just
       -- finished and reloads when another parent looks unfinished).
       (SELECT json_build_array(
                   k.id, k.attempts, k.name, k.position, k.max_attempts, k.retryable,
                   k.inputs, k.timeout_seconds, ns.handler_class, ns.handler_config,
                   ns.backoff,
                   (SELECT json_agg(json_build_array(
                               p.id, p.name, p.status, p.results, p.attempts,
                               p.max_attempts, p.inputs, p.position, p.retryable)
                           ORDER BY p.position)
                      FROM {EDGE} pe JOIN {STEP} p ON p.id = pe.from_step_id
                     WHERE pe.to_step_id = k.id),
                   k.claimed_at)
          -- A lookup by primary key (OFFSET 0 keeps it a subquery): joined, the small
          -- table was hashed on every execution.
          FROM nxt k, LATERAL (SELECT handler_class, handler_config, backoff
                                 FROM {NamedStep._meta.db_table}
                                WHERE id = k.named_step_id OFFSET 0) ns)"""  # noqa: S608


def _finish_success_sql(sibling: bool, children: bool = True, flush: bool = True) -> str:
    """The finishing statement; with ``sibling`` it can also claim the held sibling, and
    with ``children`` it readies the step's children (and claims one of them). Each
    part left out makes a smaller plan, set up again on every execution: most finishes
    hold no sibling, and a leaf step has no children. Without ``flush`` its commit does
    not wait for the disk (PG_SYNCHRONOUS_COMMIT off).
    """
    one = "(SELECT)" if flush else _NO_FLUSH
    sib = _sibling_cte(children) if sibling else ""
    kids = _CHILDREN_CTES if children else ""
    nxt = " UNION ALL ".join(
        ["SELECT * FROM kids WHERE status = 'in_progress'"] * children
        + ["SELECT * FROM sib"] * sibling
    )
    nxt_cte = f"), nxt AS (\n    {nxt}\n" if nxt else ""
    enqueued = (
        "(SELECT array_agg(id ORDER BY id) FROM kids WHERE status = 'enqueued')"
        if children
        else "NULL::bigint[]"
    )
    picked = _PICKED if nxt else "NULL::json"
    return f"""
WITH done AS (
    UPDATE {STEP}
       SET status = 'complete', results = %(results)s::jsonb, completed_at = %(now)s,
           lease_expires_at = NULL, last_error = NULL, updated_at = %(now)s
     -- Never '-': the IN list only keeps the planner off the partial index of leases
     -- (tasker_step_lease). Statistics taken while few steps ran make that index look
     -- empty, and the cached plan then scanned every running (and dead) entry of it
     -- to find this one row, a cost growing with the steps in flight.
     WHERE id = %(step)s AND status IN ('in_progress', '-') AND attempts = %(attempt)s
    RETURNING id, task_id
), att AS (
    INSERT INTO {ATTEMPT}
        (step_id, task_id, attempt_number, started_at, finished_at, duration_ms, outcome,
         error_class, error_message, error_code, error_category, error_context, worker)
    SELECT id, task_id, %(attempt)s, %(claimed)s, %(now)s, %(duration)s, 'success',
           '', '', '', '', '{{}}'::jsonb, %(worker)s
      FROM done
), t AS (
    UPDATE {TASK}
       SET completed_steps = completed_steps + 1,
           status = CASE WHEN status IN ('pending', 'in_progress') AND failed_steps = 0
                              AND completed_steps + 1 >= total_steps
                         THEN 'complete' ELSE status END,
           completed_at = CASE WHEN status IN ('pending', 'in_progress') AND failed_steps = 0
                                    AND completed_steps + 1 >= total_steps
                               THEN %(now)s ELSE completed_at END,
           updated_at = %(now)s
     WHERE id = (SELECT task_id FROM done)
    RETURNING status, completed_steps, total_steps, deadline_at
{kids}{sib}{nxt_cte}), ev AS (
    INSERT INTO {EVENT}
        (task_id, step_id, kind, name, from_status, to_status, actor, reason, payload,
         created_at)
    SELECT done.task_id, done.id, 'transition', 'step.started', '', '', '', '',
           %(payload)s::jsonb, %(claimed)s FROM done
    UNION ALL
    SELECT done.task_id, done.id, 'transition', 'step.completed', '', '', '', '',
           %(payload)s::jsonb || jsonb_build_object('duration_ms', round(%(duration)s::numeric, 3)),
           %(now)s FROM done
    UNION ALL
    SELECT done.task_id, NULL, 'transition', 'task.completed', '', '', '', '',
           %(payload)s::jsonb - 'step_id' - 'step_name' - 'attempt', %(now)s
      FROM done, t
     WHERE t.status = 'complete' AND t.completed_steps = t.total_steps
)
-- att and ev need not be read: PostgreSQL runs every data-modifying CTE to completion.
-- One row, whether or not the step was stored (t has a row exactly when done has: it
-- updates done's task); every scalar subquery here is one more plan node to set up on
-- each execution, so t's columns come from a join.
SELECT t.status IS NOT NULL, t.status, t.completed_steps, t.total_steps,
       {enqueued},
{picked}
  FROM {one} one LEFT JOIN t ON true
"""  # noqa: S608


FINISH_SUCCESS = Statement(_finish_success_sql(sibling=True))
#: Most finishes hold no sibling: the same statement without the ``sib`` CTE.
FINISH_SUCCESS_NO_SIBLING = Statement(_finish_success_sql(sibling=False))
#: A leaf step (no step depends on it): nothing to ready, no child to claim.
FINISH_LEAF = Statement(_finish_success_sql(sibling=False, children=False))
FINISH_LEAF_SIBLING = Statement(_finish_success_sql(sibling=True, children=False))
_FINISH = {
    (True, True): FINISH_SUCCESS,
    (False, True): FINISH_SUCCESS_NO_SIBLING,
    (False, False): FINISH_LEAF,
    (True, False): FINISH_LEAF_SIBLING,
}
#: The same four with PG_SYNCHRONOUS_COMMIT off.
_FINISH_NO_FLUSH = {key: Statement(_finish_success_sql(*key, flush=False)) for key in _FINISH}


def finish_success(
    *,
    step_id: int,
    attempt: int,
    results: Any,
    now: datetime,
    claimed: datetime,
    duration_ms: float,
    worker: str,
    payload: Any,
    eager: bool = False,
    lease: datetime | None = None,
    sibling: int | None = None,
    children: bool = True,
) -> tuple[bool, str | None, bool, list[int], list[Any] | None]:
    """Returns (stored, task status, task just completed, newly enqueued child ids, the
    step claimed for eager continuation as a JSON array, or None).

    With ``eager`` the first child the step readies is claimed in the same statement
    (its lease ends at ``lease``) instead of being enqueued: one statement less per
    eagerly continued step. When it readies none, the held ``sibling`` is claimed
    instead, if it is still enqueued. ``children=False`` (a leaf step: no step depends
    on it) runs the smaller statement that readies nothing.
    """
    (row,) = _execute(
        (_FINISH if _synchronous() else _FINISH_NO_FLUSH)[sibling is not None, children],
        {
            "step": step_id,
            "attempt": attempt,
            "results": results,
            "now": now,
            "claimed": claimed,
            "duration": duration_ms,
            "worker": worker[:255],
            "payload": payload,
            "eager": bool(eager and lease is not None),
            "lease": lease,
            "sibling": sibling,
        },
    )
    stored, status, completed, total, ready, picked = row
    transitioned = status == TaskStatus.COMPLETE.value and completed == total
    return bool(stored), status, transitioned, list(ready or []), picked
