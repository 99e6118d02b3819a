"""``manage.py tasker_reencrypt``: re-encrypt stored values with the newest key.

After a new key is put first in ``TASKER["ENCRYPTION_KEYS"]``, values encrypted
with older keys still read (every listed key decrypts). This command rewrites them
with the newest key, in batches, so the old key can be removed. Each row is
rewritten only if it still holds the old key id (compare-and-set), so it can run
next to workers; interrupted, it is simply run again.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Model

from tasker_django.models import Task, WorkflowStep
from tasker_django.security import crypto
from tasker_django.security.fields import Sealed

#: (model, field) pairs that may hold envelopes.
TARGETS: tuple[tuple[type[Model], str], ...] = (
    (Task, "context"),
    (WorkflowStep, "results"),
    (WorkflowStep, "inputs"),
)


def stale(model: type[Model], field: str, newest: str) -> Any:
    """Rows whose ``field`` is an envelope under another key than ``newest``."""
    return (
        model._default_manager.filter(**{f"{field}__has_key": crypto.MARKER})
        .exclude(**{f"{field}__kid": newest})
        .order_by("pk")
    )


class Command(BaseCommand):
    help = "Re-encrypt task contexts and step results/inputs with the newest encryption key."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--batch-size", type=int, default=500, help="Rows per transaction.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would be re-encrypted, per key."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch = int(options["batch_size"])
        if batch < 1:
            raise CommandError("--batch-size must be at least 1")
        try:
            newest = crypto.newest_key().kid
        except crypto.EncryptionError as exc:
            raise CommandError(str(exc)) from None
        if options["dry_run"]:
            total = 0
            for model, field in TARGETS:
                kids: dict[str, int] = {}
                for kid in stale(model, field, newest).values_list(f"{field}__kid", flat=True):
                    kids[str(kid)] = kids.get(str(kid), 0) + 1
                for kid, n in sorted(kids.items()):
                    self.stdout.write(f"{model._meta.db_table}.{field}: {n} under key {kid}")
                total += sum(kids.values())
            self.stdout.write(f"{total} value(s) to re-encrypt with key {newest} (dry run)")
            return
        done = 0
        for model, field in TARGETS:
            last = 0
            while True:
                rows = list(
                    stale(model, field, newest)
                    .filter(pk__gt=last)
                    .values_list("pk", f"{field}__kid")[:batch]
                )
                if not rows:
                    break
                with transaction.atomic():
                    for pk, kid in rows:
                        value = (
                            model._default_manager.filter(pk=pk)
                            .values_list(field, flat=True)
                            .first()
                        )
                        if not isinstance(value, dict):
                            continue
                        done += model._default_manager.filter(
                            pk=pk, **{f"{field}__kid": kid}
                        ).update(**{field: Sealed(value)})
                last = rows[-1][0]
                self.stdout.write(f"{model._meta.db_table}.{field}: {done} re-encrypted so far")
        self.stdout.write(f"re-encrypted {done} value(s) with key {newest}")
