"""``manage.py tasker_retry_step STEP_ID [--downstream]`` (or ``--task ID`` for all failed)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tasker_django.exceptions import TaskerError
from tasker_django.services import operations


class Command(BaseCommand):
    help = (
        "Retry a failed step (optionally resetting its downstream), or every failed step of a task."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("step_id", type=int, nargs="?")
        parser.add_argument(
            "--task", type=int, default=None, help="Retry every failed step of this task."
        )
        parser.add_argument(
            "--downstream", action="store_true", help="Also re-run finished descendants."
        )
        parser.add_argument("--reason", default="")
        parser.add_argument("--actor", default="cli")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["task"] is not None:
                ids = operations.retry_failed_steps(
                    options["task"], actor=options["actor"], reason=options["reason"]
                )
                self.stdout.write(f"retrying {len(ids)} step(s) of task {options['task']}")
                return
            if options["step_id"] is None:
                raise CommandError("give a STEP_ID or --task TASK_ID")
            step = operations.retry_step(
                options["step_id"],
                actor=options["actor"],
                reason=options["reason"],
                reset_downstream=options["downstream"],
            )
        except TaskerError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"step {step.pk} ({step.name}) {step.status}")
