"""Eager continuation: the worker that readies a child runs it next.

On PostgreSQL the finish statement claims that child itself (no claim statement of
its own); these tests check the child is claimed once, sees its parents' results,
and that the runner reloads it when the statement's snapshot may be stale.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from tasker_django import StepHandler, create_task
from tasker_django.engine import dispatch, pg
from tasker_django.engine.runner import claim, run_step_loop
from tasker_django.models import StepAttempt, StepStatus, TaskStatus, WorkflowStep

from .conftest import chain_yaml, is_postgres
from .test_engine import DIAMOND

pytestmark = pytest.mark.django_db


class Meddler(StepHandler, name="test.meddler"):
    """Changes the task context it was given, and returns what it saw."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        seen = dict(task.context)
        task.context["value"] = f"changed by {step.name}"
        task.context.setdefault("trail", []).append(step.name)
        return {"seen": seen}


def diamond_with_b(handler: str) -> str:
    text = DIAMOND.replace(
        "{name: b, handler_class: test.echo", f"{{name: b, handler_class: {handler}"
    )
    assert handler in text
    return text


def steps(task: Any) -> dict[str, WorkflowStep]:
    return {s.name: s for s in WorkflowStep.objects.filter(task=task)}


def test_readied_child_runs_next_in_the_same_call(load_template: Any) -> None:
    load_template(DIAMOND)
    task = create_task("diamond", context={"value": 7})
    with dispatch.suppressed(), override_settings(TASKER={"EAGER_HOLD_SECONDS": 0}):
        assert run_step_loop(steps(task)["a"].pk, worker="w1", eager=True) == 2  # a, then b
        s = steps(task)
        assert (s["b"].status, s["b"].attempts, s["b"].worker_id) == ("complete", 1, "w1")
        assert s["c"].status == StepStatus.ENQUEUED  # kicked, left to another worker
        assert s["b"].results == {"value": 7, "parents": {"a": {"value": 7, "parents": {}}}}
        # c's finish readies d (b is complete): d runs next, seeing both parents.
        assert run_step_loop(s["c"].pk, worker="w2", eager=True) == 2
    s = steps(task)
    assert s["d"].status == StepStatus.COMPLETE and s["d"].worker_id == "w2"
    assert set(s["d"].results["parents"]) == {"b", "c"}
    assert s["d"].results["parents"]["b"] == s["b"].results
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETE and task.completed_steps == 4
    # One attempt each, all counted before the handler ran.
    assert sorted(
        StepAttempt.objects.filter(task=task).values_list("attempt_number", flat=True)
    ) == [
        1,
        1,
        1,
        1,
    ]
    assert all(x.claimed_at and x.started_at and x.enqueued_at for x in s.values())


def test_siblings_are_held_and_run_by_the_same_worker(load_template: Any) -> None:
    """a readies b and c: the worker continues with b, holds c instead of kicking it,
    runs c when b is done, and c's finish readies d: one kick runs the whole diamond."""
    load_template(DIAMOND)
    task = create_task("diamond", context={"value": 7})
    a = steps(task)["a"].pk
    assert dispatch.queue_size() == 1  # a's kick
    dispatch.purge_queue()
    with CaptureQueriesContext(connection) as ctx:
        assert run_step_loop(a, worker="w1", eager=True) == 4
    assert dispatch.queue_size() == 0  # no kick for c
    s = steps(task)
    assert {x.name: (x.status, x.worker_id, x.attempts) for x in s.values()} == {
        n: ("complete", "w1", 1) for n in "abcd"
    }
    assert s["b"].completed_at <= s["c"].claimed_at  # run after b, not beside it
    assert set(s["d"].results["parents"]) == {"b", "c"}
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETE
    if is_postgres():
        # claim a; finish a, claiming b; finish b, claiming the held c; finish c,
        # claiming d; finish d: five statements for four steps.
        statements = [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]
        assert [x.split("(")[0].strip() for x in statements] == ["WITH c AS"] + 4 * ["WITH done AS"]


def test_held_siblings_are_kicked_when_the_budget_runs_out(load_template: Any) -> None:
    load_template(DIAMOND)
    task = create_task("diamond")
    dispatch.purge_queue()
    with override_settings(TASKER={"EAGER_MAX_STEPS": 2}):
        assert run_step_loop(steps(task)["a"].pk, worker="w1", eager=True) == 2  # a, b
    s = steps(task)
    assert s["c"].status == StepStatus.ENQUEUED
    assert dispatch.queue_size() == 1  # c's kick, sent when the run ended


class Thief(StepHandler, name="test.thief"):
    """Claims its sibling c for another worker while it runs."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        c = WorkflowStep.objects.get(task_id=task.id, name="c")
        assert claim(c.pk, "another-worker") is not None
        return {}


class WaitsForSiblingKick(StepHandler, name="test.waits_for_kick"):
    """Runs until its held sibling's kick reaches the broker (or 10 s pass)."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while dispatch.queue_size() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        return {"kicks_seen": dispatch.queue_size()}


@pytest.mark.django_db(transaction=True)
def test_a_sibling_held_past_hold_seconds_is_kicked(load_template: Any) -> None:
    """b runs long: c is not kept waiting for it, another worker can take c."""
    load_template(diamond_with_b("test.waits_for_kick"))
    task = create_task("diamond")
    dispatch.purge_queue()
    with override_settings(TASKER={"EAGER_HOLD_SECONDS": 0.1}):
        started = time.monotonic()
        assert run_step_loop(steps(task)["a"].pk, worker="w1", eager=True) == 2  # a, b
        waited = time.monotonic() - started
    s = steps(task)
    assert s["b"].results == {"kicks_seen": 1}
    assert 0.1 <= waited < 5
    assert s["c"].status == StepStatus.ENQUEUED  # not run by w1: its kick went out
    assert dispatch.queue_size() == 1


def test_a_held_sibling_claimed_elsewhere_is_skipped(load_template: Any) -> None:
    load_template(diamond_with_b("test.thief"))
    task = create_task("diamond")
    with dispatch.suppressed():
        assert run_step_loop(steps(task)["a"].pk, worker="w1", eager=True) == 2  # a, b
    s = steps(task)
    assert (s["c"].status, s["c"].worker_id, s["c"].attempts) == (
        "in_progress",
        "another-worker",
        1,
    )
    assert s["d"].status == StepStatus.PENDING


@pytest.mark.postgres_only
def test_finish_statement_claims_the_child(load_template: Any) -> None:
    """Two steps, three statements: claim a, finish a (claiming b), finish b."""
    if not is_postgres():
        pytest.skip("PostgreSQL fast path")
    load_template(DIAMOND)
    a = steps(create_task("diamond"))["a"].pk
    no_holding = override_settings(TASKER={"EAGER_HOLD_SECONDS": 0})
    with dispatch.suppressed(), no_holding, CaptureQueriesContext(connection) as ctx:
        assert run_step_loop(a, eager=True) == 2
    statements = [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 3, statements
    assert [s.split("(")[0].strip() for s in statements] == [
        "WITH c AS",
        "WITH done AS",
        "WITH done AS",
    ]


def test_hot_statements_use_postgresql_placeholders() -> None:
    """Converted once at import: psycopg parses nothing per call (it re-parsed the
    finishing statement on every call, 0.3 ms of Python per step, above 4 KiB)."""
    for statement in (
        pg.CLAIM_AND_LOAD,
        pg.CLAIM_AND_LOAD_NO_FLUSH,
        *pg._FINISH.values(),
        *pg._FINISH_NO_FLUSH.values(),
    ):
        assert "%(" not in statement.sql and "%s" not in statement.sql
        numbers = {int(n) for n in re.findall(r"\$(\d+)", statement.sql)}
        assert numbers == set(range(1, len(statement.names) + 1))
    assert pg.FINISH_SUCCESS.params({n: n for n in pg.FINISH_SUCCESS.names}) == (
        pg.FINISH_SUCCESS.names
    )


@pytest.mark.postgres_only
def test_finish_finds_its_step_by_primary_key(load_template: Any) -> None:
    """Statistics taken while no step ran make the partial index of leases look empty;
    the finish statement's cached plan must still look its step up by primary key, not
    scan every running step's lease entry."""
    if not is_postgres():
        pytest.skip("PostgreSQL fast path")
    types = {"results": "text", "now": "timestamptz", "step": "int8", "attempt": "int4"}
    types |= {"claimed": "timestamptz", "duration": "float8", "worker": "text"}
    types |= {"eager": "bool", "lease": "timestamptz", "sibling": "int8", "payload": "text"}
    load_template(chain_yaml("many", 500))
    create_task("many")  # 500 steps, none running
    for (sibling, children), statement in [*pg._FINISH.items(), *pg._FINISH_NO_FLUSH.items()]:
        names = statement.names
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE tasker_workflow_step")
            cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            cursor.execute(
                f"PREPARE tasker_finish_plan({', '.join(types[n] for n in names)}) AS "
                + statement.sql.replace("%", "%%")
            )
            cursor.execute(
                f"EXPLAIN EXECUTE tasker_finish_plan({', '.join(['NULL'] * len(names))})"
            )
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute("DEALLOCATE tasker_finish_plan")
        done = plan.split("CTE done", 1)[1].split("CTE ", 1)[0]
        assert "using tasker_workflow_step_pkey" in done, done
        assert "tasker_step_lease" not in done, done
        assert ("CTE sib" in plan) == sibling
        assert ("CTE kids" in plan) == children


@pytest.mark.postgres_only
def test_child_is_reloaded_when_another_parent_looks_unfinished(
    load_template: Any, monkeypatch: Any
) -> None:
    """A parent that committed after the finish statement's snapshot shows as unfinished
    there: the runner reads the child again instead of handing it stale results."""
    if not is_postgres():
        pytest.skip("PostgreSQL fast path")
    load_template(DIAMOND)
    task = create_task("diamond", context={"value": 1})
    with dispatch.suppressed():
        run_step_loop(steps(task)["a"].pk, eager=False)
        run_step_loop(steps(task)["b"].pk, eager=False)
        real = pg.finish_success
        calls: list[str] = []

        def stale_snapshot(**kwargs: Any) -> Any:
            stored, status, done, ready, picked = real(**kwargs)
            if picked is None:  # d's own finish readies nothing
                return stored, status, done, ready, picked
            calls.append(picked[2])
            parents = [list(p) for p in picked[11]]
            for p in parents:
                if p[1] == "b":  # as a snapshot taken before b committed would show it
                    p[2], p[3] = "in_progress", None
            return stored, status, done, ready, [*picked[:11], parents, *picked[12:]]

        monkeypatch.setattr(pg, "finish_success", stale_snapshot)
        assert run_step_loop(steps(task)["c"].pk, eager=True) == 2
    assert calls == ["d"]
    d = steps(task)["d"]
    assert d.status == StepStatus.COMPLETE
    assert d.results["parents"]["b"] == steps(task)["b"].results  # read again, not None


def test_encrypted_task_child_sees_plain_parent_results(load_template: Any) -> None:
    from django.test import override_settings

    from .test_encryption import CARD, KEY_A, SEEN, TEMPLATE

    SEEN.clear()
    with override_settings(TASKER={"ENCRYPTION_KEYS": [KEY_A]}):
        load_template(TEMPLATE.format(name="enc_eager", enabled="true", fail="false"))
        task = create_task("enc_eager", context={"card_number": CARD})
        with dispatch.suppressed():
            assert run_step_loop(steps(task)["charge"].pk, eager=True) == 2
        assert steps(task)["confirm"].status == StepStatus.COMPLETE
    assert SEEN[1]["parents"]["charge"] == {"token_for": CARD, "from": "charge"}


def test_next_step_does_not_see_context_changes_of_the_previous_handler(
    load_template: Any,
) -> None:
    load_template(
        """
name: meddling
version: "1.0.0"
step_templates:
  - {name: a, handler_class: test.meddler}
  - {name: b, handler_class: test.meddler, depends_on_step: a}
"""
    )
    task = create_task("meddling", context={"value": 1})
    with dispatch.suppressed():
        assert run_step_loop(steps(task)["a"].pk, eager=True) == 2
    assert steps(task)["b"].results == {"seen": {"value": 1}}
    task.refresh_from_db()
    assert task.context == {"value": 1}


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_hot_statements_keep_one_cursor_per_connection(load_template: Any) -> None:
    """A kept cursor keeps its column loaders; a new connection gets a new cursor."""
    if not is_postgres():
        pytest.skip("PostgreSQL fast path")
    load_template(chain_yaml("kept", 2))

    def run_one() -> Any:
        with dispatch.suppressed():
            task = create_task("kept")
            assert run_step_loop(steps(task)["s0"].pk, worker="t", eager=True) == 2
        task.refresh_from_db()
        assert task.status == TaskStatus.COMPLETE
        return pg._local.cursor

    first = run_one()
    assert run_one() is first
    connection.close()
    renewed = run_one()
    assert renewed is not first and renewed.connection is connection.connection


FAN_OUT = """
name: fan_out
version: "1.0.0"
step_templates:
  - {name: a, handler_class: test.echo}
  - {name: b, handler_class: test.echo, depends_on_step: a}
  - {name: c, handler_class: test.echo, depends_on_step: a}
"""


def test_leaf_siblings_run_on_one_kick(load_template: Any) -> None:
    """b and c depend on a and nothing depends on them: b's finish (a leaf's) claims the
    held c, and c's finishes the task."""
    load_template(FAN_OUT)
    task = create_task("fan_out", context={"value": 3})
    a = steps(task)["a"].pk
    dispatch.purge_queue()
    with CaptureQueriesContext(connection) as ctx:
        assert run_step_loop(a, worker="w1", eager=True) == 3
    assert dispatch.queue_size() == 0
    s = steps(task)
    assert {x.name: (x.status, x.worker_id, x.attempts) for x in s.values()} == {
        n: ("complete", "w1", 1) for n in "abc"
    }
    assert s["c"].results == {"value": 3, "parents": {"a": {"value": 3, "parents": {}}}}
    task.refresh_from_db()
    assert task.status == TaskStatus.COMPLETE and task.completed_steps == 3
    if is_postgres():
        statements = [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]
        assert statements == [
            pg.CLAIM_AND_LOAD.sql,
            pg.FINISH_SUCCESS_NO_SIBLING.sql,  # a: readies b (claimed) and c (held)
            pg.FINISH_LEAF_SIBLING.sql,  # b: a leaf, claims the held c
            pg.FINISH_LEAF.sql,  # c
        ]


def test_policy_leaves_are_the_steps_without_children(load_template: Any) -> None:
    """The engine runs the smaller finishing statement for the steps the policy calls
    leaves: they must be exactly the named steps no edge leaves from (the seed
    templates, a diamond and a fan-out)."""
    from django.core.management import call_command

    from tasker_django.engine.policy import policy_for
    from tasker_django.models import NamedStep, NamedStepEdge, NamedTask

    from .conftest import SEED_DIR

    seeds = sorted(SEED_DIR.glob("*.yaml"))
    assert seeds
    call_command("tasker_load_templates", *map(str, seeds), verbosity=0)
    load_template(DIAMOND)
    load_template(FAN_OUT)
    assert NamedTask.objects.count() >= len(seeds) + 2
    for nt in NamedTask.objects.all():
        edges = NamedStepEdge.objects.filter(named_task=nt)
        parents = set(edges.values_list("from_step", flat=True))
        steps = NamedStep.objects.filter(named_task=nt)
        expected = {s.name for s in steps if s.pk not in parents}
        assert expected and (len(expected) < steps.count() or not parents), nt.name
        assert policy_for(nt.pk, nt.content_hash).leaves == expected, nt.name


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_pg_synchronous_commit_off_is_local_to_the_engine_statements(load_template: Any) -> None:
    """TASKER["PG_SYNCHRONOUS_COMMIT"] off: the claim and finish statements turn
    synchronous_commit off for their own transaction only; the session (handlers, the
    ORM) keeps its setting, and the default leaves it alone."""
    if not is_postgres():
        pytest.skip("PostgreSQL fast path")
    from django.db import transaction

    def setting() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    load_template(DIAMOND)
    for synchronous, inside in ((False, "off"), (True, "on")):
        task = create_task("diamond", context={"value": 1})
        tasker = {"PG_SYNCHRONOUS_COMMIT": synchronous, "EAGER_HOLD_SECONDS": 0}
        with dispatch.suppressed(), override_settings(TASKER=tasker):
            assert setting() == "on"
            with transaction.atomic():  # keeps the statement's transaction open
                assert run_step_loop(steps(task)["a"].pk, worker="w1", eager=False) == 1
                assert setting() == inside
            assert setting() == "on"
            with transaction.atomic():
                # a claim; b's finish readies nothing (d waits for c)
                assert run_step_loop(steps(task)["b"].pk, worker="w1", eager=False) == 1
                assert setting() == inside
            assert setting() == "on"
            for name in "cd":
                run_step_loop(steps(task)[name].pk, worker="w1", eager=False)
        task.refresh_from_db()
        assert task.status == TaskStatus.COMPLETE
        assert StepAttempt.objects.filter(task=task, outcome="success").count() == 4
