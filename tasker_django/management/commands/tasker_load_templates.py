"""``manage.py tasker_load_templates PATH...``: validate and store YAML task templates."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tasker_django.conf import tasker_settings
from tasker_django.definitions import TemplateError, iter_template_files, load_template_file
from tasker_django.definitions.keys import inert_keys, stored_raw
from tasker_django.exceptions import TemplateConflict
from tasker_django.services.templates import handler_resolver, save_template


class Command(BaseCommand):
    help = (
        "Load YAML task templates (files or directories, searched recursively). Every "
        "problem of a file is reported at once with its line and key path. An unchanged "
        "file changes nothing; changed content under an existing namespace/name/version "
        "is refused unless --force."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("paths", nargs="+", help="Template files or directories.")
        parser.add_argument(
            "--environment",
            default=None,
            help="Apply this environment's overrides (default: TASKER['ENVIRONMENT']).",
        )
        parser.add_argument(
            "--check", action="store_true", help="Validate only; write nothing to the database."
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="Replace changed templates for new tasks (existing tasks keep their version).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        environment = options["environment"] or tasker_settings.ENVIRONMENT
        try:
            files = iter_template_files(options["paths"])
        except TemplateError as exc:
            raise CommandError(str(exc)) from None
        if not files:
            raise CommandError("No *.yaml or *.yml files found in: " + " ".join(options["paths"]))
        failures = 0
        counts = {"created": 0, "updated": 0, "unchanged": 0, "valid": 0}
        for path in files:
            try:
                template = load_template_file(
                    path, environment=environment, handler_resolver=handler_resolver
                )
            except TemplateError as exc:
                failures += 1
                n = len(exc.issues)
                self.stderr.write(self.style.ERROR(f"invalid   {path}: {n} problem(s)"))
                for issue in exc.issues:
                    self.stderr.write(f"  {issue}")
                continue
            label = f"{template.namespace}/{template.name}@{template.version}"
            if options["check"]:
                counts["valid"] += 1
                self.stdout.write(f"valid     {label} ({len(template.steps)} steps)  {path}")
                self._inert_keys(template)
                continue
            try:
                result = save_template(template, force=options["force"])
            except TemplateConflict as exc:
                failures += 1
                self.stderr.write(self.style.ERROR(f"refused   {label}  {path}\n  {exc}"))
                continue
            counts[result.outcome] += 1
            style = self.style.SUCCESS if result.outcome != "unchanged" else (lambda s: s)
            self.stdout.write(style(f"{result.outcome:<9} {label}  {path}"))
            self._inert_keys(template)
        summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
        self.stdout.write(f"{len(files)} file(s): {summary or 'nothing loaded'}, {failures} failed")
        if failures:
            raise CommandError(f"{failures} template file(s) failed")

    def _inert_keys(self, template: Any) -> None:
        """Keys of the template that do nothing (system checks W013 and W011 name them too)."""
        from tasker_django.security.checks import template_messages

        data = template.to_dict()
        notes = [f"key {key!r} {reason}" for key, reason in inert_keys(stored_raw(data))]
        notes += [
            m.msg.split(": ", 1)[-1] for m in template_messages(data) if m.id.endswith("W011")
        ]
        for note in notes:
            self.stdout.write(self.style.WARNING(f"  note: {note}"))
