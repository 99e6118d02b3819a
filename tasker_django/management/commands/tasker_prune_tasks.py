"""``manage.py tasker_prune_tasks``: delete finished tasks past their template's retention.

``security.pci_compliance.data_retention`` (with ``pci_compliance.enabled: true``)
keeps the data of a template's tasks that long after they finish (complete, error,
cancelled or resolved manually; ``completed_at``, else ``updated_at``). Older tasks
are deleted with their steps, attempts and events. Audit records are kept (they
have their own retention, ``tasker_prune_audit``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from django.db.models.functions import Coalesce

from tasker_django.engine import clock
from tasker_django.models import ENDED_TASK_STATUSES, Task
from tasker_django.security.policy import policies


class Command(BaseCommand):
    help = "Delete finished tasks older than their template's pci_compliance.data_retention."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")
        parser.add_argument("--batch-size", type=int, default=1000, help="Tasks per delete.")

    def handle(self, *args: Any, **options: Any) -> None:
        batch = int(options["batch_size"])
        if batch < 1:
            raise CommandError("--batch-size must be at least 1")
        now = clock.now()
        retained = {pk: p.retention_seconds for pk, p in policies().items() if p.retention_seconds}
        total = 0
        for named_task_id, seconds in sorted(retained.items()):
            cutoff = now - timedelta(seconds=float(seconds))
            old = (
                Task.objects.filter(named_task_id=named_task_id, status__in=ENDED_TASK_STATUSES)
                .annotate(finished=Coalesce("completed_at", "updated_at"))
                .filter(Q(finished__lt=cutoff))
                .order_by("pk")
            )
            if options["dry_run"]:
                n = old.count()
            else:
                n = 0
                while True:
                    ids = list(old.values_list("pk", flat=True)[:batch])
                    if not ids:
                        break
                    Task.objects.filter(pk__in=ids).delete()
                    n += len(ids)
            if n:
                self.stdout.write(
                    f"template revision {named_task_id}: {n} task(s) finished before "
                    f"{cutoff:%Y-%m-%d %H:%M:%S}"
                )
            total += n
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(f"{verb} {total} task(s)")
