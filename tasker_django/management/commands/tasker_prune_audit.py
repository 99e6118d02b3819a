"""``manage.py tasker_prune_audit [--dry-run]``: delete audit records past ``expires_at``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from tasker_django.engine import clock
from tasker_django.security.audit import prune


class Command(BaseCommand):
    help = (
        "Delete audit records whose retention period (security.audit_logging."
        "retention_period) has passed; records without one are kept forever."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count the expired records, delete nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        count = prune(clock.now(), dry_run=options["dry_run"])
        if options["dry_run"]:
            self.stdout.write(f"{count} expired audit record(s) would be deleted (dry run)")
        else:
            self.stdout.write(f"{count} expired audit record(s) deleted")
