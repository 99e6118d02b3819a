"""``manage.py tasker_run_handler HANDLER --context JSON``: run one handler, no task needed."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tasker_django.handlers.errors import PermanentError, RetryableError
from tasker_django.handlers.registry import registry
from tasker_django.handlers.views import StepSequence, StepView, TaskView

from ._util import parse_json_object


class Command(BaseCommand):
    help = (
        "Run a step handler directly on a JSON context and print its result or error "
        "(for debugging a handler without a task or workers)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("handler", help="Registered name, dotted path or A::B::C name.")
        parser.add_argument("--context", default="{}", help="Task context: JSON or @file.json")
        parser.add_argument("--inputs", default="{}", help="Step inputs: JSON or @file.json")
        parser.add_argument("--config", default="{}", help="handler_config: JSON or @file.json")
        parser.add_argument(
            "--parent-results",
            default="{}",
            help='Results of parent steps: {"step_name": {...}} as JSON or @file.json',
        )
        parser.add_argument("--attempt", type=int, default=1)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            entry = registry.resolve(options["handler"])
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        context = parse_json_object(options["context"], "--context")
        inputs = parse_json_object(options["inputs"], "--inputs")
        config = parse_json_object(options["config"], "--config")
        parents = parse_json_object(options["parent_results"], "--parent-results")
        handler = entry.instantiate(config=config)
        task = TaskView(
            id=0,
            context=context,
            tags=[],
            namespace="default",
            name="(direct)",
            version="0",
            initiator="cli",
            source_system=None,
            reason=None,
            priority=0,
        )
        step = StepView(
            id=0,
            name="(direct)",
            inputs=inputs,
            attempts=options["attempt"],
            max_attempts=options["attempt"],
            results=None,
            status="in_progress",
            retryable=True,
        )
        parent_views = tuple(
            StepView(
                id=-(i + 1),
                name=name,
                inputs={},
                attempts=1,
                max_attempts=1,
                results=results,
                status="complete",
                retryable=True,
            )
            for i, (name, results) in enumerate(parents.items())
        )
        sequence = StepSequence(steps=(*parent_views, step), current=step)
        try:
            output = handler.process(task, sequence, step)
            result = handler.process_results(step, output, None)
        except (PermanentError, RetryableError) as exc:
            self.stderr.write(json.dumps({"error": exc.to_dict()}, indent=2, default=str))
            raise CommandError(f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:
            raise CommandError(f"{type(exc).__name__} (would be retried): {exc}") from None
        self.stdout.write(json.dumps(result, indent=2, default=str))
