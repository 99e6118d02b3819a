"""``manage.py tasker_create_task NAMESPACE NAME --context JSON|@file [--wait]``."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tasker_django.exceptions import TaskerError, TaskValidationError
from tasker_django.models import ENDED_TASK_STATUSES, Task, TaskStatus
from tasker_django.services.tasks import create_task

from ._util import parse_json_arg, parse_json_object


class Command(BaseCommand):
    help = "Start a task of a loaded template. With --wait, show progress until it ends."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("namespace")
        parser.add_argument("name")
        # Django's own --version (print Django's version) gives way to the template's.
        parser.conflict_handler = parser._optionals.conflict_handler = "resolve"
        parser.add_argument(
            "--version",
            "--template-version",
            dest="template_version",
            default=None,
            help="Template version (default: the latest loaded, by semantic version).",
        )
        parser.add_argument("--context", default="{}", help="JSON object, or @file.json")
        parser.add_argument("--tags", default=None, help="JSON list or object")
        parser.add_argument("--initiator", default=None)
        parser.add_argument("--reason", default=None)
        parser.add_argument("--idempotency-key", default=None)
        parser.add_argument("--priority", type=int, default=0)
        parser.add_argument("--wait", action="store_true", help="Wait for the task to end.")
        parser.add_argument("--timeout", type=float, default=None, help="Seconds to wait at most.")

    def handle(self, *args: Any, **options: Any) -> None:
        self._verbosity = options["verbosity"]
        context = parse_json_object(options["context"], "--context")
        tags = parse_json_arg(options["tags"], "--tags")
        try:
            task = create_task(
                options["name"],
                namespace=options["namespace"],
                version=options["template_version"],
                context=context,
                tags=tags,
                initiator=options["initiator"] or "cli",
                source_system="manage.py",
                reason=options["reason"],
                idempotency_key=options["idempotency_key"],
                priority=options["priority"],
            )
        except TaskValidationError as exc:
            raise CommandError(str(exc)) from None
        except TaskerError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"task {task.pk} created ({task.total_steps} steps)")
        if not options["wait"]:
            return
        status = self._wait(task, options["timeout"])
        if status != TaskStatus.COMPLETE:
            raise CommandError(
                f"task {task.pk} ended {status}; see `manage.py tasker_task {task.pk}`"
            )

    def _wait(self, task: Task, timeout: float | None) -> str:
        from tqdm import tqdm

        deadline = time.monotonic() + timeout if timeout else None
        bar = tqdm(
            total=task.total_steps,
            unit="step",
            file=self.stderr._out,
            desc=f"task {task.pk}",
            disable=self._verbosity == 0,
        )
        try:
            while True:
                task.refresh_from_db(fields=["status", "completed_steps", "failed_steps"])
                bar.n = task.completed_steps
                bar.set_postfix(status=task.status, failed=task.failed_steps)
                bar.refresh()
                if task.status in ENDED_TASK_STATUSES:
                    break
                if deadline and time.monotonic() > deadline:
                    raise CommandError(f"task {task.pk} still {task.status} after {timeout} s")
                time.sleep(0.2)
        finally:
            bar.close()
        self.stdout.write(f"task {task.pk} {task.status}")
        return task.status
