"""``manage.py tasker_test_scenarios``: run templates' ``testing.test_scenarios``.

Each scenario runs inline (no workers, a fake clock) inside a transaction that is
rolled back, with the template's mock services; a pass/fail table follows, and
the command exits non-zero when a scenario fails.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from tasker_django.definitions import version_key
from tasker_django.models import NamedTask
from tasker_django.testing.scenarios import (
    Scenario,
    ScenarioResult,
    run_scenario,
    scenarios_of,
)

SELECTOR = re.compile(r"^(?:(?P<namespace>[^/@\s]+)/)?(?P<name>[^/@\s]+)(?:@(?P<version>\S+))?$")


class Command(BaseCommand):
    help = (
        "Run the test scenarios (testing.test_scenarios) of the loaded templates, or of "
        "the ones given, inline with their mock services; every scenario is rolled back. "
        "Prints a pass/fail table and exits non-zero if a scenario fails."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "templates",
            nargs="*",
            metavar="NAMESPACE/NAME[@VERSION]",
            help="Templates to test (default: every current template with scenarios). "
            "A bare NAME works when one namespace has it.",
        )
        parser.add_argument(
            "--scenario",
            action="append",
            default=[],
            metavar="NAME",
            help="Run only this scenario (repeat for several).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity = int(options["verbosity"])
        templates = self._templates(options["templates"])
        wanted = list(dict.fromkeys(options["scenario"]))
        plan: list[tuple[NamedTask, Scenario]] = []
        for named_task in templates:
            plan += [
                (named_task, s)
                for s in scenarios_of(named_task.template)
                if not wanted or s.name in wanted
            ]
        found = {s.name for _, s in plan}
        unknown = [name for name in wanted if name not in found]
        if unknown:
            known = sorted({s.name for t in templates for s in scenarios_of(t.template)})
            raise CommandError(
                f"Unknown scenario(s): {', '.join(unknown)}. Known: {', '.join(known) or 'none'}."
            )
        if not plan:
            if verbosity:
                self.stdout.write("No loaded template declares testing.test_scenarios.")
            return
        results = []
        for named_task, scenario in plan:
            result = run_scenario(named_task, scenario)
            results.append(result)
            if verbosity >= 2:
                self.stdout.write(result.describe())
        self._table(results, verbosity)
        failed = sum(not r.passed for r in results)
        if failed:
            raise CommandError(f"{failed} of {len(results)} scenario(s) failed")

    def _templates(self, selectors: list[str]) -> list[NamedTask]:
        current = list(
            NamedTask.objects.filter(is_current=True)
            .select_related("namespace")
            .order_by("namespace__name", "name")
        )
        if not selectors:
            chosen = [t for t in current if scenarios_of(t.template)]
            return sorted(chosen, key=lambda t: (t.namespace.name, t.name, version_key(t.version)))
        chosen = []
        for selector in selectors:
            match = SELECTOR.match(selector)
            if match is None:
                raise CommandError(f"{selector!r} is not NAMESPACE/NAME[@VERSION]")
            found = [
                t
                for t in current
                if t.name == match["name"]
                and (match["namespace"] is None or t.namespace.name == match["namespace"])
                and (match["version"] is None or t.version == match["version"])
            ]
            if not found:
                raise CommandError(f"No loaded template {selector}.")
            if len({t.namespace.name for t in found}) > 1:
                spaces = ", ".join(sorted({t.namespace.name for t in found}))
                raise CommandError(
                    f"{selector!r} is in several namespaces ({spaces}): give NAMESPACE/NAME."
                )
            if match["version"] is None:  # the latest version, as create_task picks it
                found = [max(found, key=lambda t: version_key(t.version))]
            named_task = found[0]
            if not scenarios_of(named_task.template):
                raise CommandError(f"{named_task} declares no testing.test_scenarios.")
            if named_task not in chosen:
                chosen.append(named_task)
        return chosen

    def _table(self, results: list[ScenarioResult], verbosity: int) -> None:
        rows = [
            (r.scenario.name, r.scenario.template, r.result, r.detail)
            for r in results
            if verbosity or not r.passed
        ]
        if rows:
            header = ("scenario", "template", "result", "detail")
            widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]

            def line(cells: tuple[str, ...]) -> str:
                padded = [cell.ljust(widths[i]) for i, cell in enumerate(cells[:3])]
                return "  ".join([*padded, cells[3]]).rstrip()

            self.stdout.write(line(header))
            self.stdout.write(line((*("-" * w for w in widths), "------")))
            for row in rows:
                text = line(row)
                style = self.style.SUCCESS if row[2] == "PASS" else self.style.ERROR
                self.stdout.write(style(text))
        passed = sum(r.passed for r in results)
        if verbosity:
            self.stdout.write(
                f"{len(results)} scenario(s): {passed} passed, {len(results) - passed} failed"
            )
