"""Django settings for ``scripts/bench.py`` and the worker processes it starts.

Derived from ``tests.settings``; the benchmark's own PostgreSQL database and the
broker come from the environment:

* ``DATABASE_URL``    the PostgreSQL server (default ``postgres://postgres@127.0.0.1:5432/test``);
* ``BENCH_DB_NAME``   the database on it that the benchmark owns (default ``tasker_bench``);
* ``BENCH_BROKER``    ``orm`` (django-q2's ORM broker, ``poll`` 0.02 s) or ``redis``;
* ``BENCH_REDIS_HOST`` / ``BENCH_REDIS_PORT`` (default 127.0.0.1:6379, db 0);
* ``BENCH_EAGER``     ``1`` (default) or ``0``: tasker's eager continuation;
* ``BENCH_RECYCLE``   django-q2's ``recycle`` (tasks a worker runs before it is replaced;
  django-q2's default, 500, when unset). Raw django-q2's 2,000 tasks recycle each of the
  two workers twice, tasker's 500 kicks none: set it high to compare without that.
* ``BENCH_GUARD_CYCLE`` django-q2's ``guard_cycle`` (seconds between the sentinel's checks,
  which replace a recycled worker; django-q2's default, 0.5, when unset).
* ``BENCH_PG_SYNCHRONOUS_COMMIT`` ``1`` (default) or ``0``: ``TASKER["PG_SYNCHRONOUS_COMMIT"]``.
  ``0`` shows what waiting for the flush to disk at each step transition costs; it is a
  durability trade-off (see the README), not how the README's table is taken.
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES as _TEST_DATABASES

if _TEST_DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise RuntimeError("the benchmark needs PostgreSQL: set DATABASE_URL=postgres://...")

DATABASES = {
    "default": {
        **_TEST_DATABASES["default"],
        "NAME": os.environ.get("BENCH_DB_NAME", "tasker_bench"),
        "CONN_MAX_AGE": 60,
    }
}

BENCH_BROKER = os.environ.get("BENCH_BROKER", "orm")
BENCH_REDIS = {
    "host": os.environ.get("BENCH_REDIS_HOST", "127.0.0.1"),
    "port": int(os.environ.get("BENCH_REDIS_PORT", "6379")),
    "db": 0,
}

Q_CLUSTER: dict = {
    "name": "tasker_bench",
    "workers": 2,
    "timeout": 120,
    "retry": 180,
    "max_attempts": 1,
    "poll": 0.02,
    "save_limit": 0,
    "ack_failures": True,
    "catch_up": False,
    "log_level": "WARNING",
}
if os.environ.get("BENCH_RECYCLE"):
    Q_CLUSTER["recycle"] = int(os.environ["BENCH_RECYCLE"])
if os.environ.get("BENCH_GUARD_CYCLE"):
    Q_CLUSTER["guard_cycle"] = float(os.environ["BENCH_GUARD_CYCLE"])
if BENCH_BROKER == "orm":
    Q_CLUSTER["orm"] = "default"
elif BENCH_BROKER == "redis":
    Q_CLUSTER["redis"] = dict(BENCH_REDIS)
else:
    raise RuntimeError(f"BENCH_BROKER must be orm or redis, not {BENCH_BROKER!r}")

TASKER: dict = {
    "LEASE_SECONDS": 120,
    # Long: a re-kick must not add work while the benchmark measures.
    "REKICK_AFTER_SECONDS": 3600,
    "SWEEP_INTERVAL": 0.5,
    "DEFAULT_STEP_TIMEOUT": 60,
    "EAGER_CONTINUATION": os.environ.get("BENCH_EAGER", "1") != "0",
}
if os.environ.get("BENCH_PG_SYNCHRONOUS_COMMIT", "1") == "0":
    TASKER["PG_SYNCHRONOUS_COMMIT"] = False
