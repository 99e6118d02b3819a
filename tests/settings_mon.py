"""tests.settings with TASKER["ALERT_SCHEDULE"] on (a worker test in tests/test_alerts.py)."""

from tests.settings import *  # noqa: F403
from tests.settings import TASKER as _BASE

TASKER = {**_BASE, "ALERT_SCHEDULE": True, "ALERT_INTERVAL": 120}
