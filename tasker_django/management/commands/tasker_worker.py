"""``manage.py tasker_worker``: a django-q2 cluster plus the tasker sweeper, one command."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.management.base import BaseCommand
from django.db import close_old_connections, connections

from tasker_django.conf import tasker_settings
from tasker_django.engine import dispatch
from tasker_django.engine.sweeper import sweep

logger = logging.getLogger("tasker_django.worker")


class Command(BaseCommand):
    help = (
        "Start a django-q2 cluster that runs step handlers, together with the tasker sweeper "
        "(retries due, lost workers, lost kicks, task deadlines). Stop it with Ctrl-C or SIGTERM."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--no-cluster",
            action="store_true",
            help="Run only the sweeper (when qcluster processes are started separately).",
        )
        parser.add_argument(
            "--sweep-interval",
            type=float,
            default=None,
            help="Seconds between sweeps (default: TASKER['SWEEP_INTERVAL']).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        interval = options["sweep_interval"] or float(tasker_settings.SWEEP_INTERVAL)
        if tasker_settings.ALERT_SCHEDULE is True:
            from tasker_django.monitoring.alerts import install_schedule

            schedule, what = install_schedule()
            self.stdout.write(
                f"tasker worker: alert schedule {what} (every {schedule.minutes} min)"
            )
        cluster = None
        if not options["no_cluster"]:
            from django_q.cluster import Cluster

            # The cluster forks: no connection may be shared with the children.
            connections.close_all()
            dispatch.reset_broker()
            cluster = Cluster()
            cluster.start()
            self.stdout.write(f"tasker worker: django-q2 cluster {cluster.name} started")
        self.stdout.write(f"tasker worker: sweeping every {interval:g} s")
        self.stdout.flush()
        try:
            while cluster is None or (cluster.sentinel is not None and cluster.sentinel.is_alive()):
                started = time.monotonic()
                try:
                    report = sweep()
                    if report.total:
                        logger.info("sweep: %s", report)
                except Exception:
                    logger.exception("sweep failed; retrying")
                    close_old_connections()
                    for conn in connections.all():
                        conn.close_if_unusable_or_obsolete()
                time.sleep(max(interval - (time.monotonic() - started), 0.01))
        except KeyboardInterrupt:
            pass
        finally:
            if cluster is not None and cluster.sentinel is not None and cluster.sentinel.is_alive():
                cluster.stop()
        self.stdout.write("tasker worker: stopped")
