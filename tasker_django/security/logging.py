"""``MaskingFilter``: card numbers never reach the logs of ``tasker_django``.

A filter on a logger sees only the records logged on that very logger, not those
of its children, so the app installs the filter on ``tasker_django`` and masks the
records of every ``tasker_django.*`` logger (handlers' loggers included) where they
are created (:func:`install`, called by the app config; ``TASKER["MASK_LOGS"] =
False`` turns it off). Add ``MaskingFilter`` to your own handlers to mask other
loggers too. The message and arguments are formatted and masked at emit time, and
so is the traceback text.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .masking import mask, mask_text


class MaskingFilter(logging.Filter):
    """Masks card numbers (Luhn-valid 13-19 digits) in a record's message, arguments
    and traceback; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        mask_record(record)
        return True


def mask_record(record: logging.LogRecord) -> None:
    if getattr(record, "_tasker_masked", False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: leave it to the handler to report
        return
    masked = mask_text(message)
    if masked != message:
        record.msg, record.args = masked, None
    if record.exc_info and not record.exc_text:
        record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = mask_text(record.exc_text)
    for key in ("context", "payload"):
        if isinstance(getattr(record, key, None), dict | list):
            setattr(record, key, mask(getattr(record, key)))
    record._tasker_masked = True


_installed = False
_lock = threading.Lock()


def install() -> None:
    """Mask every record of the ``tasker_django`` loggers as it is created (once)."""
    global _installed
    from ..conf import tasker_settings

    if not tasker_settings.MASK_LOGS:
        return
    with _lock:
        if _installed:
            return
        logging.getLogger("tasker_django").addFilter(MaskingFilter())
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            name = record.name
            if name == "tasker_django" or name.startswith("tasker_django."):
                mask_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
