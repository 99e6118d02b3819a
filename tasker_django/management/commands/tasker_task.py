"""``manage.py tasker_task ID``: the step tree with statuses, attempts and waiting reasons."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tasker_django.models import Task, WorkflowStep
from tasker_django.security.access import PLAIN, masking_viewer
from tasker_django.services.inspect import step_states


class Command(BaseCommand):
    help = "Show a task: its steps in dependency order, statuses, attempts and why each waits."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("task_id", type=int)
        parser.add_argument(
            "--data", action="store_true", help="Also print the context and each step's results."
        )
        parser.add_argument(
            "--show-sensitive",
            action="store_true",
            help="Do not mask sensitive values (card numbers, tokens, ...); masked by default.",
        )

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
        viewer = PLAIN if options["show_sensitive"] else masking_viewer(task.named_task)
        states = step_states(task)
        width = max((len(s.name) for s in states), default=4)
        for s in states:
            parents = f" <- {', '.join(s.parents)}" if s.parents else ""
            write(
                f"  {s.name:<{width}}  {s.status:<17} {s.attempts}/{s.max_attempts}"
                f"{parents}"
                + (f"\n  {'':<{width}}  {viewer.show_text(s.reason)}" if s.reason else "")
            )
        if options["data"]:
            write("context: " + json.dumps(viewer.show(task.context), sort_keys=True))
            results = dict(WorkflowStep.objects.filter(task=task).values_list("name", "results"))
            for s in states:
                shown = viewer.show(results.get(s.name))
                write(f"  {s.name}: " + json.dumps(shown, sort_keys=True))
