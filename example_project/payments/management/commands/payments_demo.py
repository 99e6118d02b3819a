"""``manage.py payments_demo [--count 40] [--short]``: the example project's demo.

Starts ``tasker_worker`` processes, submits a mixed batch of payments through the
project's three templates, shows their progress, prints a summary per template,
stops the workers and exits non-zero unless every payment ended as intended.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.urls import NoReverseMatch, reverse

from example_project.payments import seed_demo
from example_project.payments.demo import (
    COMPLETE,
    DEMO_PASSWORD,
    DEMO_USERNAME,
    ERROR,
    NAMESPACE,
    REJECTED,
    TEMPLATES,
    Outcome,
    Submission,
    build_batch,
    format_table,
    summary_rows,
)
from example_project.payments.workers import WorkerProcesses, terminate_on_sigterm
from tasker_django import TaskValidationError, TemplateNotFound, create_task
from tasker_django.models import AttemptOutcome, StepAttempt, Task, TaskStatus, WorkflowStep

RUNNING = (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)
RETRIED_OUTCOMES = (
    AttemptOutcome.RETRYABLE_ERROR,
    AttemptOutcome.TIMEOUT,
    AttemptOutcome.WORKER_LOST,
)
SHORT_COUNT = 11  # the first ten kinds of the pattern and the rejected context


class Command(BaseCommand):
    help = (
        "Demo: start tasker_worker processes, run a mixed batch of payments through the "
        "payments templates, print a summary per template. Exits non-zero if any payment "
        "ends in a state the demo did not intend."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--count", type=int, default=40, help="Payments to submit (40).")
        parser.add_argument(
            "--short",
            action="store_true",
            help=f"A short run for CI: {SHORT_COUNT} payments, one of each kind.",
        )
        parser.add_argument(
            "--workers", type=int, default=2, help="tasker_worker processes to start (2)."
        )
        parser.add_argument(
            "--timeout", type=float, default=90, help="Seconds to wait for the batch (90)."
        )
        parser.add_argument("--seed", type=int, default=4, help="Seed of the batch's amounts.")
        parser.add_argument(
            "--no-user", action="store_true", help="Do not create the demo superuser."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        self.verbosity = options["verbosity"]
        terminate_on_sigterm()
        count = SHORT_COUNT if options["short"] else options["count"]
        if count < 2:
            raise CommandError("--count must be at least 2")
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        batch = build_batch(count, seed=options["seed"])
        self.stdout.write(
            self.style.MIGRATE_HEADING(
                f"tasker-django demo: {count} payments through {len(TEMPLATES)} workflows"
            )
            + f" ({_database()}, {_broker()})"
        )
        seed_problems: list[str] = []
        with tempfile.TemporaryDirectory(prefix="payments-demo-") as log_dir:
            workers = WorkerProcesses(options["workers"], log_dir=Path(log_dir))
            try:
                workers.start()
                self.stdout.write(
                    f"Starting {options['workers']} tasker_worker processes "
                    f"(django-q2 cluster + sweeper each, {_q_workers()} handlers per process)..."
                )
                login = "a superuser of yours" if options["no_user"] else self._demo_user()
                self._wait_ready(workers)
                self._timing("workers ready", started)
                outcomes = self._submit(batch)
                task_ids = [o.task_id for o in outcomes if o.task_id is not None]
                self._timing("batch submitted", started)
                self._wait(task_ids, workers, options["timeout"])
                self._timing("batch finished", started)
                seed_problems = seed_demo.run(
                    self.stdout.write, workers.logs, timeout=options["timeout"]
                )
                self._timing("seed payment_workflow finished", started)
            except KeyboardInterrupt:
                raise CommandError("interrupted") from None
            finally:
                self.stdout.write("Stopping the workers...", ending="")
                self.stdout.flush()
                workers.stop()
                self.stdout.write(" stopped.")
                self._timing("workers stopped", started)
        _collect(outcomes)
        self._report(outcomes, time.monotonic() - started, login, seed_problems)

    # -- steps of the demo ----------------------------------------------------------------

    def _demo_user(self) -> str:
        """Create the demo superuser on a development (DEBUG) database; say how to log in."""
        if not settings.DEBUG:
            return "a superuser of yours (no demo user: DEBUG is off)"
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username=DEMO_USERNAME,
            defaults={"email": "demo@example.com", "is_staff": True, "is_superuser": True},
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
            self.stdout.write(
                f"Created the demo superuser {DEMO_USERNAME} / {DEMO_PASSWORD} "
                "(demo database only)."
            )
            return f"{DEMO_USERNAME} / {DEMO_PASSWORD}"
        if user.check_password(DEMO_PASSWORD):
            return f"{DEMO_USERNAME} / {DEMO_PASSWORD}"
        return f"{DEMO_USERNAME} (its password is no longer {DEMO_PASSWORD!r})"

    def _timing(self, what: str, started: float) -> None:
        if self.verbosity >= 2:
            self.stdout.write(f"  [{time.monotonic() - started:5.2f} s] {what}")

    def _wait_ready(self, workers: WorkerProcesses, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not workers.ready():
            if workers.alive() < workers.count or time.monotonic() > deadline:
                raise CommandError("a worker did not start:\n" + workers.output())
            time.sleep(0.05)

    def _submit(self, batch: list[Submission]) -> list[Outcome]:
        rejected = sum(1 for s in batch if s.expect == REJECTED)
        self.stdout.write(
            f"Submitting {len(batch)} payments ({len(batch) - rejected} tasks, "
            f"{rejected} context that the schema rejects):"
        )
        outcomes = []
        for submission in batch:
            try:
                task = create_task(
                    submission.template,
                    namespace=NAMESPACE,
                    context=submission.context,
                    tags=["demo"],
                    initiator="payments_demo",
                    source_system="manage.py payments_demo",
                    reason=f"demo payment #{submission.number}: {submission.scenario}",
                )
            except TemplateNotFound as exc:
                raise CommandError(
                    f"{exc}. Load the templates first: "
                    "manage.py tasker_load_templates example_project/task_templates"
                ) from None
            except TaskValidationError as exc:
                outcomes.append(Outcome(submission, REJECTED, error_message=exc.message))
                self.stdout.write(
                    f"  #{submission.number} {submission.template} "
                    + self.style.WARNING("rejected")
                    + f" (as intended): {exc.message}"
                )
                for problem in exc.errors:
                    self.stdout.write(f"      {problem['path']}: {problem['message']}")
                continue
            outcomes.append(Outcome(submission, task.status, task_id=task.pk))
        return outcomes

    def _wait(self, task_ids: list[int], workers: WorkerProcesses, timeout: float) -> None:
        from tqdm import tqdm

        deadline = time.monotonic() + timeout
        bar = tqdm(
            total=len(task_ids),
            desc="Running",
            unit="task",
            file=sys.stderr,
            bar_format="{desc} {bar:30} {n_fmt}/{total_fmt} tasks [{elapsed}]{postfix}",
            mininterval=0.2,
        )
        try:
            while True:
                statuses = list(
                    Task.objects.filter(pk__in=task_ids).values_list("status", flat=True)
                )
                done = sum(1 for s in statuses if s not in RUNNING)
                bar.set_postfix_str(
                    f"complete {statuses.count(COMPLETE)}, error {statuses.count(ERROR)}",
                    refresh=False,
                )
                bar.update(done - bar.n)
                if done == len(task_ids):
                    break
                if not workers.alive():
                    raise CommandError("every worker process exited:\n" + workers.output())
                if time.monotonic() > deadline:
                    raise CommandError(
                        f"{len(task_ids) - done} task(s) still running after {timeout:g} s; "
                        "see them with manage.py tasker_task TASK_ID\n" + workers.output(tail=10)
                    )
                time.sleep(0.1)
        finally:
            bar.close()

    def _report(
        self, outcomes: list[Outcome], seconds: float, login: str, seed_problems: list[str]
    ) -> None:
        write = self.stdout.write
        write("")
        for line in format_table(summary_rows(outcomes)):
            write("  " + line)
        write("  (mean and p95: seconds from submission to completion, complete tasks)")

        self._write_retries(outcomes)
        self._write_failures(outcomes)

        problems = [(o, o.problem) for o in outcomes if o.problem]
        tally = Counter(outcome.status for outcome in outcomes)
        counts = ", ".join(f"{tally[k]} {k}" for k in (COMPLETE, ERROR, REJECTED) if tally[k])
        write("")
        if problems:
            write(self.style.ERROR(f"{len(problems)} payment(s) did not end as intended:"))
            for outcome, problem in problems:
                s = outcome.submission
                task = f"task {outcome.task_id}" if outcome.task_id else "no task"
                write(f"  #{s.number} {s.template} ({s.scenario}, {task}): {problem}")
            raise CommandError(f"{len(problems)} payment(s) did not end as intended")
        if seed_problems:
            write(self.style.ERROR("The seed payment_workflow did not behave as intended:"))
            for problem in seed_problems:
                write(f"  {problem}")
            raise CommandError("the seed payment_workflow did not behave as intended")
        write(
            self.style.SUCCESS(f"All {len(outcomes)} payments ended as intended")
            + f" ({counts}) in {seconds:.1f} s."
        )
        write("")
        write("See the tasks, their steps, attempts and events:")
        write("  make serve     # the development server and a tasker worker; Ctrl-C stops both")
        write(f"  then open http://127.0.0.1:8000/admin/ and log in as {login}")
        api = _url("tasker:task-list")
        if api:
            write(f"  the API is at http://127.0.0.1:8000{api} (same login)")

    def _write_retries(self, outcomes: list[Outcome]) -> None:
        """Per template and step: retries of tasks that then completed, and why."""
        retried: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
        for outcome in outcomes:
            if outcome.status == COMPLETE and outcome.task_id is not None:
                for step, message in outcome.retried:
                    retried[outcome.submission.template, step].append((outcome.task_id, message))
        if not retried:
            return
        self.stdout.write("")
        self.stdout.write("Retried, then completed:")
        for (template, step), attempts in sorted(retried.items(), key=_template_order):
            n, tasks = len(attempts), len({task_id for task_id, _ in attempts})
            self.stdout.write(
                f"  {template + '.' + step:<37} {n:>2} {'retry' if n == 1 else 'retries':<7} in"
                f" {tasks:>2} {'task' if tasks == 1 else 'tasks':<5}  {attempts[0][1]}"
            )

    def _write_failures(self, outcomes: list[Outcome]) -> None:
        """Per error code, template and step: the tasks that failed, with an error message."""
        failures: dict[tuple[str, str, str], list[Outcome]] = defaultdict(list)
        for outcome in outcomes:
            if outcome.status == ERROR:
                code = outcome.error_code or "(no code)"
                failures[code, outcome.submission.template, outcome.error_step].append(outcome)
        if not failures:
            return
        self.stdout.write("")
        self.stdout.write(
            "Failed on purpose, each with a clear error (the admin shows every attempt):"
        )
        width = max(len(code) for code, _, _ in failures)
        for (code, template, step), failed in sorted(failures.items(), key=_code_order):
            self.stdout.write(
                f"  {code:<{width}} {len(failed):>2} x {template}.{step}: {failed[0].error_message}"
            )


# -- helpers ---------------------------------------------------------------------------------


def _collect(outcomes: list[Outcome]) -> None:
    """Fill in each task's final status, error, retries and duration."""
    by_task = {o.task_id: o for o in outcomes if o.task_id is not None}
    tasks = Task.objects.filter(pk__in=list(by_task)).values_list(
        "pk", "status", "created_at", "completed_at"
    )
    for pk, status, created_at, completed_at in tasks:
        outcome = by_task[pk]
        outcome.status = status
        if status == COMPLETE and completed_at is not None:
            outcome.seconds = (completed_at - created_at).total_seconds()
    steps = WorkflowStep.objects.filter(task_id__in=list(by_task)).values_list(
        "task_id", "name", "status", "attempts", "last_error"
    )
    for task_id, name, status, attempts, last_error in steps:
        outcome = by_task[task_id]
        outcome.retries += max(attempts - 1, 0)
        if status == ERROR:
            error = last_error or {}
            outcome.error_step = name
            outcome.error_code = error.get("error_code") or ""
            outcome.error_message = error.get("message") or ""
    retried = (
        StepAttempt.objects.filter(task_id__in=list(by_task), outcome__in=RETRIED_OUTCOMES)
        .order_by("task_id", "step_id", "attempt_number")
        .values_list("task_id", "step__name", "error_message")
    )
    for task_id, step_name, message in retried:
        by_task[task_id].retried.append((step_name, message))


def _template_order(item: tuple[tuple[str, str], Any]) -> tuple[int, str]:
    template, step = item[0]
    return (TEMPLATES.index(template) if template in TEMPLATES else len(TEMPLATES), step)


def _code_order(item: tuple[tuple[str, str, str], Any]) -> tuple[str, int, str]:
    code, template, step = item[0]
    return (code, *_template_order(((template, step), None)))


def _database() -> str:
    if connection.vendor == "sqlite":
        return f"SQLite {Path(str(connection.settings_dict['NAME'])).name}"
    if connection.vendor == "postgresql":
        return f"PostgreSQL {connection.settings_dict['NAME']}"
    return connection.vendor


def _broker() -> str:
    q_cluster = getattr(settings, "Q_CLUSTER", {})
    if q_cluster.get("redis"):
        return "Redis broker"
    return "django-q2 ORM broker"


def _q_workers() -> int:
    return int(getattr(settings, "Q_CLUSTER", {}).get("workers") or 1)


def _url(name: str) -> str:
    """The path of URL ``name``, or "" if the project does not route it."""
    try:
        return reverse(name)
    except NoReverseMatch:
        return ""
