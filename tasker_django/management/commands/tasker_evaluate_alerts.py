"""``manage.py tasker_evaluate_alerts``: evaluate the templates' ``monitoring.alerts`` once."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tasker_django.monitoring.alerts import evaluate_alerts, setting_seconds


def _values(values: dict[str, Any]) -> str:
    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return json.dumps(value)

    return ", ".join(f"{k}={fmt(v)}" for k, v in sorted(values.items())) or "-"


class Command(BaseCommand):
    help = (
        "Evaluate every current template's monitoring.alerts over a window: a true "
        "condition fires an alert (one row while it keeps firing), a false one resolves it, "
        "a condition without data changes nothing. Prints a table and prunes old metric "
        "observations."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--window",
            type=float,
            default=None,
            help="Seconds of history to evaluate over (default: TASKER['ALERT_WINDOW']).",
        )
        parser.add_argument(
            "--template",
            default=None,
            metavar="NAMESPACE/NAME",
            help="Only this template (a bare NAME means namespace 'default').",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        window = options["window"]
        if window is not None and not window > 0:
            raise CommandError("--window must be a positive number of seconds")
        namespace = name = None
        if options["template"]:
            namespace, _, name = options["template"].rpartition("/")
            namespace = namespace or "default"
            if not name:
                raise CommandError("--template must be NAMESPACE/NAME")
        report = evaluate_alerts(
            window=window if window is not None else setting_seconds("ALERT_WINDOW"),
            namespace=namespace,
            template=name,
        )
        rows = [
            (
                f"{r.namespace}/{r.template}",
                r.name,
                r.severity,
                r.outcome,
                _values(r.values) if r.outcome != "invalid" else r.message,
            )
            for r in report.results
        ]
        headers = ("template", "alert", "severity", "status", "values")
        widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
        widths[-1] = len(headers[-1])

        def line(cells: tuple[str, ...]) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        if rows:
            self.stdout.write(line(headers))
            self.stdout.write(line(tuple("-" * w for w in widths)))
            for row in rows:
                text = line(row)
                if row[3] == "fired":
                    text = self.style.ERROR(text)
                elif row[3] == "resolved":
                    text = self.style.SUCCESS(text)
                self.stdout.write(text)
        else:
            self.stdout.write("no alerts declared by the current templates")
        self.stdout.write(report.summary())
