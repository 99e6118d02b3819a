"""The demo's second part: the seed's ``payment_workflow`` with its behaviour sections.

``payments_demo`` calls :func:`run` while its workers still run. It creates a few
tasks of the seed template (``default/payment_workflow``, loaded by ``make demo``
from ``../shared/seed-templates``), waits for them and prints one line for each
behaviour the template declares: business rules, events and sinks, metrics,
alerts, masking (with encryption at rest) and the audit log. Every line is read
back from what really happened (the database, the workers' logs), never assumed.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from django.db import connection

from tasker_django.exceptions import TaskValidationError, TemplateNotFound
from tasker_django.models import AuditRecord, MetricSeries, Task, TaskEvent, TaskStatus
from tasker_django.security.masking import mask, sensitive_names
from tasker_django.services.operations import cancel_task
from tasker_django.services.tasks import create_task
from tasker_django.services.templates import find_template

NAMESPACE, NAME = "default", "payment_workflow"
RUNNING = (TaskStatus.WAITING, TaskStatus.PENDING, TaskStatus.IN_PROGRESS)

#: Payments of the seed workflow: (context, what it shows).
PAYMENTS: list[dict[str, Any]] = [
    {"payment_amount": 120, "currency": "USD", "payment_method": "card"},
    {"payment_amount": 980.5, "currency": "EUR", "payment_method": "card"},
    {
        "payment_amount": 45,
        "currency": "GBP",
        "payment_method": "bank_transfer",
        "simulate_transient_failures": 1,
    },
]
CARD = {"card_number": "4111 1111 1111 1111", "cvv": "123"}


def run(write: Callable[[str], None], log_files: list[Any], timeout: float = 60) -> list[str]:
    """Run the seed part of the demo; returns what did not happen as intended."""
    try:
        template = find_template(NAME, namespace=NAMESPACE)
    except TemplateNotFound:
        write(
            "The seed's payment_workflow is not loaded (make demo loads it from "
            "../shared/seed-templates): its part of the demo is skipped."
        )
        return []
    problems: list[str] = []
    write("")
    write(f"The seed's {NAMESPACE}/{NAME}@{template.version}: its behaviour sections at work")

    # -- rules -------------------------------------------------------------------------
    try:
        create_task(NAME, namespace=NAMESPACE, context={"payment_amount": 25000, "currency": "USD"})
    except TaskValidationError as exc:
        messages = "; ".join(e["message"] for e in exc.errors)
        write(f"  rules       a 25000 USD payment is refused at creation: {messages}")
    else:
        problems.append("the business rule payment_amount <= 10000 did not refuse 25000")

    # -- the tasks ----------------------------------------------------------------------
    ids = []
    for number, context in enumerate(PAYMENTS, start=1):
        task = create_task(
            NAME,
            namespace=NAMESPACE,
            context={**context, "customer_id": 100 + number, **CARD},
            initiator="payments_demo",
            reason="seed payment_workflow demo",
        )
        ids.append(task.pk)
    cancelled = create_task(
        NAME,
        namespace=NAMESPACE,
        context={"payment_amount": 10, "currency": "USD", "customer_id": 199, **CARD},
        initiator="payments_demo",
    )
    cancel_task(cancelled.pk, actor="payments_demo", reason="the customer changed their mind")
    deadline = time.monotonic() + timeout
    while Task.objects.filter(pk__in=ids, status__in=RUNNING).exists():
        if time.monotonic() > deadline:
            problems.append(f"seed tasks {ids} still running after {timeout:g} s")
            break
        time.sleep(0.1)
    statuses = Counter(Task.objects.filter(pk__in=ids).values_list("status", flat=True))
    if statuses[TaskStatus.COMPLETE] != len(ids):
        problems.append(f"seed tasks ended {dict(statuses)}, not all complete")
    write(
        f"  tasks       {statuses[TaskStatus.COMPLETE]}/{len(ids)} payments complete "
        f"(tasks {', '.join(map(str, ids))}), 1 cancelled by an operator "
        f"(task {cancelled.pk})"
    )

    # -- events and sinks ---------------------------------------------------------------
    stored = TaskEvent.objects.filter(task_id__in=ids).count()
    time.sleep(0.3)  # sinks run right after each commit; let the last log lines land
    text = "".join(path.read_text(errors="replace") for path in log_files)
    sinks = Counter(re.findall(r"payments\.sinks\.(\w+)", text))
    delivered = ", ".join(f"{name} {count}" for name, count in sorted(sinks.items()))
    write(
        f"  events      {stored} events stored; delivered by the workers to the sinks "
        f"events.step_events/workflow_events name: {delivered or 'none'}"
    )
    if not sinks:
        problems.append("no event reached the example sinks (payments.sinks.*)")

    # -- metrics ------------------------------------------------------------------------
    series = {s.name: s for s in MetricSeries.objects.filter(namespace=NAMESPACE, template=NAME)}
    shown = []
    for s in sorted(series.values(), key=lambda s: s.name):
        if s.kind == "histogram":
            shown.append(f"{s.name} {s.count} observed (sum {s.sum:.3f} s)")
        else:
            shown.append(f"{s.name} = {s.value:g}")
    write(f"  metrics     {'; '.join(shown) or 'none recorded'} (on /tasker/metrics/)")
    if not series:
        problems.append("no template metric was recorded")

    # -- alerts -------------------------------------------------------------------------
    from tasker_django.monitoring.alerts import evaluate_alerts

    report = evaluate_alerts(namespace=NAMESPACE, template=NAME, prune=False)
    outcomes = ", ".join(f"{r.name}: {r.outcome}" for r in report.results)
    write(f"  alerts      {outcomes} ({report.window:g} s window)")
    if not report.results:
        problems.append("no alert of the template was evaluated")

    # -- masking and encryption -----------------------------------------------------------
    first = Task.objects.get(pk=ids[0])
    masked = mask(first.context, sensitive_names(first.named_task.template))
    write(
        f"  masking     an operator without view_sensitive_data sees card_number "
        f"{masked.get('card_number')!r}, cvv {masked.get('cvv')!r}"
    )
    with connection.cursor() as cursor:
        table = Task._meta.db_table  # the raw column, as the database stores it
        cursor.execute(f"SELECT context FROM {table} WHERE id = %s", [first.pk])  # noqa: S608
        raw = str(cursor.fetchone()[0])
    encrypted = "4111" not in raw and "tasker_encrypted" in raw
    write(
        "  encryption  the context is stored "
        + ("encrypted (AES-256-GCM)" if encrypted else "IN PLAIN TEXT")
        + "; the handlers saw plain values"
    )
    if not encrypted or masked.get("card_number") == CARD["card_number"]:
        problems.append("the card number was not masked or not encrypted")

    # -- audit log ----------------------------------------------------------------------
    records = AuditRecord.objects.filter(task_id__in=[*ids, cancelled.pk])
    action = records.filter(actor="payments_demo", event="task.cancelled").first()
    plain = records.filter(payload__icontains="4111 1111").exists()
    write(
        f"  audit log   {records.count()} records"
        + (
            f"; e.g. {action.event} by {action.actor}: {action.reason!r}"
            if action is not None
            else ""
        )
        + ("; card data in them is masked" if not plain else "")
    )
    if action is None or plain:
        problems.append("the audit log lacks the cancel action or holds card data")
    return problems
