"""``manage.py tasker_resolve_step STEP_ID [--results JSON|@file] [--complete]``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tasker_django.exceptions import TaskerError
from tasker_django.services import operations

from ._util import parse_json_arg


class Command(BaseCommand):
    help = "Resolve a step by hand (its children then run), optionally with results they see."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("step_id", type=int)
        parser.add_argument("--results", default=None, help="JSON object, or @file.json")
        parser.add_argument(
            "--complete", action="store_true", help="Mark it complete (results required)."
        )
        parser.add_argument("--reason", default="")
        parser.add_argument("--actor", default="cli")

    def handle(self, *args: Any, **options: Any) -> None:
        results = parse_json_arg(options["results"], "--results")
        try:
            if options["complete"]:
                step = operations.complete_step(
                    options["step_id"],
                    results=results,
                    actor=options["actor"],
                    reason=options["reason"],
                )
            else:
                step = operations.resolve_step(
                    options["step_id"],
                    results=results,
                    actor=options["actor"],
                    reason=options["reason"],
                )
        except TaskerError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"step {step.pk} ({step.name}) {step.status}")
