"""Event sinks the seed's payment_workflow routes to (``events.*.publish_to``).

Each logs one line per event on its own logger (``payments.sinks.<name>``); a real
project would send to its monitoring, analytics or paging system here. Payloads
arrive masked (card numbers, tokens...).
"""

from __future__ import annotations

from tasker_django.sinks import LoggingSink


class _NamedSink(LoggingSink):
    sink_name = ""

    def __init__(self) -> None:
        super().__init__(logger_name=f"payments.sinks.{self.sink_name}")


class Monitoring(_NamedSink):
    sink_name = "monitoring"


class Analytics(_NamedSink):
    sink_name = "analytics"


class Alerting(_NamedSink):
    sink_name = "alerting"


class CustomerUpdates(_NamedSink):
    sink_name = "customer_updates"


class FraudDetection(_NamedSink):
    sink_name = "fraud_detection"
