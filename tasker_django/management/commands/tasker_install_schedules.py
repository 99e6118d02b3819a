"""``manage.py tasker_install_schedules``: the django-q2 schedule of the alert evaluation."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from tasker_django.monitoring.alerts import (
    SCHEDULE_FUNC,
    SCHEDULE_NAME,
    install_schedule,
    remove_schedule,
)


class Command(BaseCommand):
    help = (
        f"Create or update the django-q2 schedule {SCHEDULE_NAME!r} that evaluates the "
        "templates' alerts every TASKER['ALERT_INTERVAL'] seconds (rounded up to whole "
        "minutes). Running it again changes nothing. The cluster's scheduler runs it."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--remove", action="store_true", help="Delete the schedule instead.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["remove"]:
            n = remove_schedule()
            self.stdout.write(f"schedule {SCHEDULE_NAME}: {'removed' if n else 'not installed'}")
            return
        schedule, what = install_schedule()
        self.stdout.write(
            f"schedule {SCHEDULE_NAME}: {what} (every {schedule.minutes} min, {SCHEDULE_FUNC})"
        )
