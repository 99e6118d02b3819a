"""``manage.py payments_serve [ADDRPORT]``: the development server and a tasker worker.

One command for browsing the demo: ``runserver`` serves the admin (and the API),
and a ``tasker_worker`` process runs the steps of the tasks you create or retry
meanwhile. Ctrl-C stops both.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand

from example_project.payments.workers import WorkerProcesses, terminate_on_sigterm


class Command(BaseCommand):
    help = "Run the development server together with a tasker_worker; Ctrl-C stops both."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "addrport", nargs="?", default="127.0.0.1:8000", help="Address (127.0.0.1:8000)."
        )
        parser.add_argument(
            "--workers", type=int, default=1, help="tasker_worker processes to start (1)."
        )
        parser.add_argument(
            "--noreload", action="store_true", help="Do not restart the server on code changes."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # With the autoreloader, runserver runs this command again in a child process
        # (RUN_MAIN=true) that serves the requests: only the first process starts workers.
        if os.environ.get("RUN_MAIN") == "true":
            call_command("runserver", options["addrport"], use_reloader=True)
            return
        terminate_on_sigterm()
        workers = WorkerProcesses(options["workers"])
        try:
            workers.start()
            self.stdout.write(
                f"Started {options['workers']} tasker_worker process(es) "
                f"(pid {', '.join(str(p.pid) for p in workers.procs)})."
            )
            call_command("runserver", options["addrport"], use_reloader=not options["noreload"])
        except KeyboardInterrupt:  # Ctrl-C without the autoreloader
            pass
        finally:
            workers.stop()
            self.stdout.write("Stopped the tasker worker(s).")
