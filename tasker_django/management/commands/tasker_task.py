"""``manage.py tasker_task ID``: the step tree with statuses, attempts and waiting reasons."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tasker_django.models import Task
from tasker_django.services.inspect import step_states


class Command(BaseCommand):
    help = "Show a task: its steps in dependency order, statuses, attempts and why each waits."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("task_id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            task = Task.objects.select_related("named_task__namespace").get(pk=options["task_id"])
        except Task.DoesNotExist:
            raise CommandError(f"task {options['task_id']} does not exist") from None
        write = self.stdout.write
        write(f"task {task.pk}  {task.named_task}  {task.status}")
        write(
            f"  steps {task.completed_steps}/{task.total_steps} done, {task.failed_steps} failed;"
            f" created {task.created_at:%Y-%m-%d %H:%M:%S}"
            + (f", deadline {task.deadline_at:%H:%M:%S}" if task.deadline_at else "")
        )
        states = step_states(task)
        width = max((len(s.name) for s in states), default=4)
        for s in states:
            parents = f" <- {', '.join(s.parents)}" if s.parents else ""
            write(
                f"  {s.name:<{width}}  {s.status:<17} {s.attempts}/{s.max_attempts}"
                f"{parents}" + (f"\n  {'':<{width}}  {s.reason}" if s.reason else "")
            )
