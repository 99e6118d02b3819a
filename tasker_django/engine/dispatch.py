"""The only module that talks to django-q2: it sends kicks for enqueued steps.

A kick is a django-q2 task ``run_step(step_id)`` with ``save=False``: the
database holds the truth (I1), the broker only says "look at step N". With the
ORM broker on the same database the kick is written in the caller's transaction;
with any other broker it is sent when that transaction commits. Losing kicks
loses no work: the sweeper re-kicks steps that stayed ``enqueued`` too long.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

RUN_STEP = "tasker_django.engine.worker.run_step"

_local = threading.local()
_broker_cache: dict[str, Any] = {}


@contextmanager
def suppressed() -> Iterator[None]:
    """Send no kicks inside the block (inline runs in tests drive steps themselves)."""
    previous = getattr(_local, "suppressed", False)
    _local.suppressed = True
    try:
        yield
    finally:
        _local.suppressed = previous


def is_suppressed() -> bool:
    return getattr(_local, "suppressed", False)


def get_broker() -> Any:
    """One django-q2 broker per process (a new one per kick costs a new connection)."""
    key = f"{os.getpid()}"
    broker = _broker_cache.get(key)
    if broker is None:
        from django_q.brokers import get_broker as q_get_broker

        _broker_cache.clear()
        broker = _broker_cache[key] = q_get_broker()
    return broker


def reset_broker() -> None:
    _broker_cache.clear()


def _package(step_id: int) -> str:
    from django_q.conf import Conf
    from django_q.humanhash import uuid
    from django_q.signing import SignedPackage

    name, task_id = uuid()
    task: dict[str, Any] = {
        "id": task_id,
        "name": f"tasker-step-{step_id}-{name}",
        "func": RUN_STEP,
        "args": (step_id,),
        "kwargs": {},
        "save": False,
        "started": timezone.now(),
    }
    if Conf.ACK_FAILURES:
        task["ack_failure"] = True
    return SignedPackage.dumps(task)


def _orm_alias(broker: Any) -> str | None:
    from django_q.brokers.orm import ORM
    from django_q.conf import Conf

    return Conf.ORM if isinstance(broker, ORM) else None


def _send(step_ids: Sequence[int], priority: int = 0) -> None:
    broker = get_broker()
    packages = [_package(i) for i in step_ids]
    alias = _orm_alias(broker)
    if alias is not None:
        from django_q.models import OrmQ

        now = timezone.now()
        key = broker.list_key
        OrmQ.objects.using(alias).bulk_create(
            [OrmQ(key=key, payload=p, lock=now) for p in packages]
        )
        return
    connection = getattr(broker, "connection", None)
    if connection is not None and hasattr(connection, "rpush"):  # Redis
        if priority > 0:
            # task_config.priority: workers pop from the head, so these go first.
            connection.lpush(broker.list_key, *packages)
        else:
            connection.rpush(broker.list_key, *packages)
        return
    for package in packages:
        broker.enqueue(package)


def kick_steps(
    step_ids: Sequence[int], priority: int = 0, *, batch_size: int | None = None
) -> None:
    """Send a kick for each step id. The steps must already be ``enqueued``.

    Kicks go to the broker together (one ``INSERT`` on the ORM broker, one ``RPUSH``
    on Redis), ``batch_size`` at a time when given (``performance.batching``). On
    Redis, kicks of tasks with a positive ``priority`` go to the head of the queue;
    the ORM broker is first in, first out.
    """
    ids = [int(i) for i in step_ids]
    if not ids or is_suppressed():
        return
    size = batch_size if batch_size and batch_size > 0 else len(ids)
    for start in range(0, len(ids), size):
        _kick(ids[start : start + size], priority)


def send_kicks(
    step_ids: Sequence[int], priority: int = 0, *, batch_size: int | None = None
) -> None:
    """Send kicks now, whatever transaction the caller is in.

    For steps whose ``enqueued`` state has already committed: the kicks a worker held
    back (engine/holding.py), sent from its eager run or from the holding thread.
    """
    ids = [int(i) for i in step_ids]
    size = batch_size if batch_size and batch_size > 0 else len(ids)
    for start in range(0, len(ids), size):
        _safe_send(ids[start : start + size], priority)


def _kick(ids: list[int], priority: int = 0) -> None:
    broker = get_broker()
    alias = _orm_alias(broker)
    in_transaction = alias is not None and transaction.get_connection(alias).in_atomic_block
    if in_transaction or transaction.get_autocommit():
        _safe_send(ids, priority)
    else:
        transaction.on_commit(lambda: _safe_send(ids, priority))


def _safe_send(ids: list[int], priority: int = 0) -> None:
    try:
        _send(ids, priority)
    except Exception:
        # The steps stay enqueued in the database; the sweeper kicks them again.
        logger.exception("could not send kicks for steps %s; the sweeper will retry", ids)
        if _orm_alias(get_broker()) is not None and not transaction.get_autocommit():
            raise


def queue_size() -> int | None:
    """Messages waiting in the broker, or None if the broker cannot tell."""
    try:
        return int(get_broker().queue_size())
    except Exception:
        return None


def ping() -> bool:
    """Whether the broker can be reached (for readiness checks); never raises.

    The ORM broker's own ``ping()`` always says yes, so its database is queried.
    """
    try:
        broker = get_broker()
        alias = _orm_alias(broker)
        if alias is not None:
            from django.db import connections

            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        return bool(broker.ping())
    except Exception:
        logger.warning("the broker did not answer a ping", exc_info=True)
        return False


def purge_queue() -> None:
    """Drop every waiting message (used by tests that simulate a lost broker)."""
    get_broker().purge_queue()
