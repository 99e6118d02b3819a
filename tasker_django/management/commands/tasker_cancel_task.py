"""``manage.py tasker_cancel_task TASK_ID [--reason TEXT]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tasker_django.exceptions import TaskerError
from tasker_django.services import operations


class Command(BaseCommand):
    help = "Cancel a task; running handlers' late results are discarded."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("task_id", type=int)
        parser.add_argument("--reason", default="")
        parser.add_argument("--actor", default="cli")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            task = operations.cancel_task(
                options["task_id"], actor=options["actor"], reason=options["reason"]
            )
        except TaskerError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"task {task.pk} {task.status}")
