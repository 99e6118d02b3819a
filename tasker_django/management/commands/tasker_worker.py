"""``manage.py tasker_worker``: a django-q2 cluster plus the tasker sweeper, one command."""

from __future__ import annotations

import logging
import signal
import threading
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
        stopping = threading.Event()
        if not options["no_cluster"]:
            from django_q.cluster import Cluster

            # The cluster forks: no connection may be shared with the children.
            connections.close_all()
            dispatch.reset_broker()
            cluster = Cluster()
            cluster.start()
            self.stdout.write(f"tasker worker: django-q2 cluster {cluster.name} started")
        # Our own handlers replace the cluster's, which stops the cluster inside the
        # signal handler (see _stop_cluster).
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda signum, frame: stopping.set())
        self.stdout.write(f"tasker worker: sweeping every {interval:g} s")
        self.stdout.flush()
        while not stopping.is_set() and (
            cluster is None or (cluster.sentinel is not None and cluster.sentinel.is_alive())
        ):
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
            stopping.wait(max(interval - (time.monotonic() - started), 0.01))
        if cluster is not None:
            self._stop_cluster(cluster)
        self.stdout.write("tasker worker: stopped")

    def _stop_cluster(self, cluster: Any) -> None:
        """Stop the cluster: gracefully when only this process got the signal.

        ``Cluster.stop()`` sets a multiprocessing event the sentinel waits on; when the
        sentinel died first (systemd's default ``KillMode=control-group`` and ``kill``
        of the process group send SIGTERM to every process, and the sentinel does not
        catch it), setting that event blocks forever on the dead waiter. So the stop
        runs in a thread, and what it leaves after its time limit is killed.
        """
        from django_q.conf import Conf

        sentinel = cluster.sentinel
        if sentinel is None or not sentinel.is_alive():
            return
        stopper = threading.Thread(target=cluster.stop, name="tasker-cluster-stop", daemon=True)
        stopper.start()
        # Workers finish their current task first; django-q2 kills a task at its timeout.
        # A dead sentinel (is_alive() reaps it) leaves nothing to wait for.
        deadline = time.monotonic() + float(Conf.TIMEOUT or 60) + 10
        while stopper.is_alive() and sentinel.is_alive() and time.monotonic() < deadline:
            stopper.join(0.2)
        if sentinel.is_alive():
            logger.warning("the django-q2 cluster did not stop in time; killing it")
            sentinel.kill()
            sentinel.join(5)
