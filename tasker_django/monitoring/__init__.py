"""Template metrics and alerts: the ``monitoring`` section of task templates.

* :mod:`.declarations`: what a template declares (``monitoring.metrics`` and
  ``monitoring.alerts``), parsed once per template revision;
* :mod:`.recording`: ``StepHandler.record_metric`` stores values atomically
  (``MetricSeries`` for the exporter, ``MetricObservation`` for alert windows);
* :mod:`.exporter`: the declared metrics on the Prometheus endpoint;
* :mod:`.values`: the metric values an alert condition sees over a window;
* :mod:`.alerts`: evaluating alerts (``tasker_evaluate_alerts``), the django-q2
  schedule and pruning;
* :mod:`.checks`: system checks W008 and W009.

See docs/monitoring.md.
"""
