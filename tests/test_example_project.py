"""The example project's payments app: its handlers, its templates and the seed templates.

Handlers are unit-tested directly with ``tasker_django.handlers.views`` objects, the
workflows inline with ``run_task_to_completion``, and every template of the example
project and of the seed once more through real ``tasker_worker`` processes.
"""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from django.core.management import call_command

from example_project.payments.tasker_handlers import (
    AuditLogStepHandler,
    AuthorizePaymentHandler,
    CapturePaymentHandler,
    FraudCheckHandler,
    NotificationStepHandler,
    PaymentProcessingStepHandler,
    PaymentVerificationStepHandler,
    SendConfirmationHandler,
    ValidatePaymentHandler,
    parent_payment,
)
from tasker_django import PermanentError, RetryableError, TaskValidationError, create_task
from tasker_django.handlers.views import StepSequence, StepView, TaskView
from tasker_django.models import NamedTask, StepAttempt, Task, TaskStatus
from tasker_django.testing import run_task_to_completion

from .conftest import EXAMPLE_TEMPLATES, SEED_DIR, wait_for

CONTEXT = {"amount": 120.5, "currency": "USD", "customer_id": 7}


def run_handler(
    handler: Any,
    context: dict[str, Any] | None = None,
    *,
    inputs: dict[str, Any] | None = None,
    attempt: int = 1,
    max_attempts: int = 3,
    parents: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """process() then process_results(), as the engine calls them."""
    task = TaskView(id=11, context=dict(CONTEXT if context is None else context))
    step = StepView(
        id=99,
        name="current",
        inputs=inputs or {},
        attempts=attempt,
        max_attempts=max_attempts,
        status="in_progress",
    )
    parent_views = [
        StepView(id=i + 1, name=name, status="complete", results=results)
        for i, (name, results) in enumerate((parents or {}).items())
    ]
    sequence = StepSequence(steps=(*parent_views, step), current=step, task_id=task.id)
    return handler.process_results(step, handler.process(task, sequence, step), None)


# -- payment processing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        (0, "amount must be positive, got 0"),
        (-12.5, "amount must be positive, got -12.5"),
        ("twelve", "amount 'twelve' is not a number"),
        (None, "the payment has no amount"),
        (True, "amount True is not a number"),
    ],
)
def test_invalid_amount_is_a_permanent_validation_error(amount: Any, message: str) -> None:
    with pytest.raises(PermanentError) as caught:
        run_handler(PaymentProcessingStepHandler(), {**CONTEXT, "amount": amount})
    assert caught.value.error_code == "INVALID_AMOUNT"
    assert caught.value.error_category == "validation"
    assert str(caught.value) == message


def test_amount_below_configured_minimum_is_invalid() -> None:
    with pytest.raises(PermanentError) as caught:
        run_handler(PaymentProcessingStepHandler({"min_amount": 1}), {**CONTEXT, "amount": 0.5})
    assert caught.value.error_code == "INVALID_AMOUNT"


def test_amount_above_max_amount_is_exceeded() -> None:
    handler = PaymentProcessingStepHandler({"max_amount": 5000})
    with pytest.raises(PermanentError) as caught:
        run_handler(handler, {**CONTEXT, "amount": 5000.01})
    error = caught.value
    assert error.error_code == "AMOUNT_EXCEEDED"
    assert error.error_category == "validation"
    assert error.context == {"amount": 5000.01, "limit": 5000.0}
    assert run_handler(handler, {**CONTEXT, "amount": 5000})["amount"] == 5000.0


def test_default_max_amount_is_10000() -> None:
    with pytest.raises(PermanentError, match="exceeds the limit of 10000"):
        run_handler(PaymentProcessingStepHandler(), {**CONTEXT, "amount": 10_001})


def test_approval_threshold_asks_for_a_retry_after_then_pays() -> None:
    handler = PaymentProcessingStepHandler(
        {"approval_threshold": 2500, "approval_retry_after": 0.5}
    )
    with pytest.raises(RetryableError) as caught:
        run_handler(handler, {**CONTEXT, "amount": 3000}, attempt=1)
    assert caught.value.retry_after == 0.5
    assert caught.value.error_category == "approval_pending"
    assert run_handler(handler, {**CONTEXT, "amount": 3000}, attempt=2)["amount"] == 3000.0
    assert run_handler(handler, {**CONTEXT, "amount": 2500}, attempt=1)["amount"] == 2500.0


def test_simulated_transient_failures() -> None:
    context = {**CONTEXT, "simulate_transient_failures": 2}
    for attempt in (1, 2):
        with pytest.raises(RetryableError, match="timed out"):
            run_handler(PaymentProcessingStepHandler(), context, attempt=attempt)
    assert run_handler(PaymentProcessingStepHandler(), context, attempt=3)["status"] == "completed"


def test_payment_result_and_audit_metadata() -> None:
    handler = PaymentProcessingStepHandler({"payment_gateway": "stripe"})
    result = run_handler(handler, {**CONTEXT, "amount": 100}, attempt=2)
    audit = result.pop("audit")
    assert result == {
        "status": "completed",
        "payment_id": result["payment_id"],
        "amount": 100.0,
        "currency": "USD",
        "payment_method": "card",
        "gateway": "stripe",
        "fee": 3.2,  # 2.9 % + 0.30
    }
    assert result["payment_id"].startswith("pay_")
    assert audit["step_id"] == 99
    assert audit["handler"] == "PaymentProcessingStepHandler"
    assert audit["attempt"] == 2
    assert "T" in audit["processed_at"]


def test_payment_id_is_stable_across_attempts() -> None:
    first = run_handler(PaymentProcessingStepHandler(), attempt=1)
    again = run_handler(PaymentProcessingStepHandler(), attempt=3)
    assert first["payment_id"] == again["payment_id"]


def test_amount_currency_and_method_from_inputs_then_context_then_payment_info() -> None:
    handler = PaymentProcessingStepHandler({"processor": "example_payment_gateway"})
    result = run_handler(
        handler,
        {"payment_info": {"amount": 10, "currency": "EUR"}, "payment_method": "paypal"},
        inputs={"amount": 20},
    )
    assert (result["amount"], result["currency"], result["payment_method"]) == (
        20.0,
        "EUR",
        "paypal",
    )
    assert result["gateway"] == "example_payment_gateway"


def test_unsupported_currency_and_method() -> None:
    handler = PaymentProcessingStepHandler(
        {"supported_currencies": ["USD"], "supported_payment_methods": ["card", "paypal"]}
    )
    with pytest.raises(PermanentError) as caught:
        run_handler(handler, {**CONTEXT, "currency": "JPY"})
    assert caught.value.error_code == "UNSUPPORTED_CURRENCY"
    with pytest.raises(PermanentError) as caught:
        run_handler(handler, {**CONTEXT, "payment_method": "cheque"})
    assert caught.value.error_code == "UNSUPPORTED_PAYMENT_METHOD"
    assert run_handler(handler)["payment_method"] == "card"  # the first supported one


# -- the steps after the payment ---------------------------------------------------------------

PAYMENT = {"payment_id": "pay_abc", "amount": 120.5, "currency": "USD"}


def test_notification_reads_its_parents_payment_through_sequence() -> None:
    result = run_handler(NotificationStepHandler(), parents={"payment_processing": PAYMENT})
    assert result["payment_id"] == "pay_abc"
    assert result["type"] == "email"
    assert result["recipient"] == "customer-7@example.com"
    # The nearest parent with a payment id wins; parents without one are skipped.
    result = run_handler(
        NotificationStepHandler(),
        parents={"payment_processing": {"payment_id": "pay_old"}, "verify": PAYMENT, "x": {}},
    )
    assert result["payment_id"] == "pay_abc"


def test_parent_payment_ignores_unfinished_steps() -> None:
    current = StepView(id=3, name="notify", status="in_progress")
    sequence = StepSequence(
        steps=(
            StepView(id=1, name="pay", status="complete", results=PAYMENT),
            StepView(id=2, name="other", status="error", results={"payment_id": "pay_x"}),
            current,
        ),
        current=current,
    )
    assert parent_payment(sequence)["payment_id"] == "pay_abc"


@pytest.mark.parametrize("kind", ["email", "sms", "push"])
def test_notification_types(kind: str) -> None:
    handler = NotificationStepHandler({"sms_failure_rate": 0})
    result = run_handler(handler, {**CONTEXT, "notification_type": kind})
    assert result["sent"] is True and result["type"] == kind


def test_unknown_notification_type_is_unsupported() -> None:
    with pytest.raises(PermanentError) as caught:
        run_handler(NotificationStepHandler(), {**CONTEXT, "notification_type": "fax"})
    assert caught.value.error_code == "UNSUPPORTED_TYPE"
    assert caught.value.context == {"type": "fax", "supported": ["email", "sms", "push"]}
    # supported_types narrows the channels.
    with pytest.raises(PermanentError):
        run_handler(
            NotificationStepHandler({"supported_types": ["email"]}),
            {**CONTEXT, "notification_type": "sms"},
        )


def test_sms_fails_transiently_but_never_on_the_last_attempt() -> None:
    handler = NotificationStepHandler({"sms_failure_rate": 1.0})
    context = {**CONTEXT, "notification_type": "sms"}
    for attempt in (1, 2):
        with pytest.raises(RetryableError) as caught:
            run_handler(handler, context, attempt=attempt, max_attempts=3)
        assert caught.value.error_category == "external_service"
    assert run_handler(handler, context, attempt=3, max_attempts=3)["type"] == "sms"


def test_sms_fails_now_and_then() -> None:
    """At the default rate (0.3) some first attempts fail and most do not."""
    failures = 0
    for task_id in range(200):
        task = TaskView(id=task_id, context={**CONTEXT, "notification_type": "sms"})
        step = StepView(id=1, name="notify", attempts=1, max_attempts=5)
        try:
            NotificationStepHandler().process(task, StepSequence(steps=(step,), current=step), step)
        except RetryableError:
            failures += 1
    assert 30 < failures < 90


def test_verification_needs_a_payment() -> None:
    result = run_handler(PaymentVerificationStepHandler(), parents={"payment_processing": PAYMENT})
    assert result["verified"] is True and result["payment_id"] == "pay_abc"
    with pytest.raises(PermanentError) as caught:
        run_handler(PaymentVerificationStepHandler())
    assert caught.value.error_code == "MISSING_PAYMENT"


def test_audit_log_has_no_card_data() -> None:
    context = {**CONTEXT, "payment_info": {"card_token": "tok_secret_123"}}
    result = run_handler(AuditLogStepHandler(), context, parents={"payment_processing": PAYMENT})
    assert result["payment_id"] == "pay_abc"
    assert "tok_secret_123" not in str(result)


# -- the credit-card flow --------------------------------------------------------------------

CARD: dict[str, Any] = {
    "order_id": 1,
    "customer_id": 7,
    "payment_info": {"amount": 80, "currency": "EUR", "card_token": "tok_1234567890"},
}


def test_credit_card_flow_by_hand() -> None:
    valid = run_handler(ValidatePaymentHandler(), CARD)
    assert valid["valid"] is True and valid["card_last4"] == "7890"
    fraud = run_handler(FraudCheckHandler(), {**CARD, "risk_score": 0.2})
    auth = run_handler(
        AuthorizePaymentHandler(), CARD, parents={"validate_payment": valid, "check_fraud": fraud}
    )
    assert auth["amount"] == 80.0 and auth["currency"] == "EUR"
    capture = run_handler(CapturePaymentHandler(), CARD, parents={"authorize_payment": auth})
    assert capture["authorization_id"] == auth["authorization_id"]
    confirmation = run_handler(
        SendConfirmationHandler(), CARD, parents={"capture_payment": capture}
    )
    assert confirmation["payment_id"] == capture["payment_id"]


def test_authorize_needs_both_validation_and_fraud_check() -> None:
    valid = run_handler(ValidatePaymentHandler(), CARD)
    with pytest.raises(PermanentError) as caught:
        run_handler(AuthorizePaymentHandler(), CARD, parents={"validate_payment": valid})
    assert caught.value.error_code == "PRECONDITION_FAILED"


def test_fraud_check_threshold() -> None:
    with pytest.raises(PermanentError) as caught:
        run_handler(FraudCheckHandler({"risk_threshold": 0.5}), {**CARD, "risk_score": 0.6})
    assert caught.value.error_code == "FRAUD_SUSPECTED"
    assert caught.value.error_category == "fraud"


def test_validate_rejects_a_non_positive_amount() -> None:
    context = {**CARD, "payment_info": {**CARD["payment_info"], "amount": 0}}
    with pytest.raises(PermanentError) as caught:
        run_handler(ValidatePaymentHandler(), context)
    assert caught.value.error_code == "INVALID_AMOUNT"


# -- the project's templates, inline ------------------------------------------------------------


def load(*paths: Any, environment: str | None = None) -> None:
    args = [str(p) for p in paths]
    if environment:
        args += ["--environment", environment]
    call_command("tasker_load_templates", *args, stdout=io.StringIO())


@pytest.mark.django_db
def test_linear_payment_retries_then_completes() -> None:
    load(EXAMPLE_TEMPLATES)
    task = create_task(
        "linear_payment",
        namespace="payments",
        context={**CONTEXT, "simulate_transient_failures": 2},
    )
    task = run_task_to_completion(task)
    assert task.status == TaskStatus.COMPLETE
    steps = {s.name: s for s in task.steps.all()}
    assert [s.name for s in task.steps.order_by("position")] == [
        "payment_processing",
        "payment_verification",
        "send_confirmation",
        "update_customer_records",
        "generate_analytics",
    ]
    payment = steps["payment_processing"]
    assert payment.attempts == 3
    assert payment.results["audit"]["attempt"] == 3
    assert payment.results["audit"]["step_id"] == payment.pk
    payment_id = payment.results["payment_id"]
    for name in list(steps)[1:]:
        assert steps[name].results["payment_id"] == payment_id, name


@pytest.mark.django_db
def test_fanout_waits_for_approval_with_retry_after() -> None:
    load(EXAMPLE_TEMPLATES)
    task = create_task(
        "payment_fanout", namespace="payments", context={"amount": 3000, "customer_id": 7}
    )
    task = run_task_to_completion(task)
    assert task.status == TaskStatus.COMPLETE
    attempts = StepAttempt.objects.filter(task=task, step__name="payment_processing")
    assert [(a.outcome, a.retry_after) for a in attempts] == [
        ("retryable_error", 0.5),
        ("success", None),
    ]
    notification = task.steps.get(name="payment_notification").results
    assert (
        notification["payment_id"]
        == task.steps.get(name="payment_processing").results["payment_id"]
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "context", "step", "code"),
    [
        (
            "payment_fanout",
            {"amount": 7500, "customer_id": 7},
            "payment_processing",
            "AMOUNT_EXCEEDED",
        ),
        ("linear_payment", {**CONTEXT, "amount": 0}, "payment_processing", "INVALID_AMOUNT"),
        (
            "payment_fanout",
            {"amount": 10, "customer_id": 7, "notification_type": "pigeon"},
            "payment_notification",
            "UNSUPPORTED_TYPE",
        ),
        ("credit_card_payment", {**CARD, "risk_score": 0.95}, "check_fraud", "FRAUD_SUSPECTED"),
    ],
)
def test_permanent_failures_fail_the_task_with_their_code(
    name: str, context: dict[str, Any], step: str, code: str
) -> None:
    load(EXAMPLE_TEMPLATES)
    task = run_task_to_completion(create_task(name, namespace="payments", context=context))
    assert task.status == TaskStatus.ERROR
    failed = task.steps.get(status="error")
    assert failed.name == step
    assert failed.attempts == 1  # a permanent error is not retried
    assert failed.last_error["error_code"] == code


@pytest.mark.django_db
def test_credit_card_schema_rejects_a_bad_context() -> None:
    load(EXAMPLE_TEMPLATES)
    bad = {**CARD, "payment_info": {"amount": -1, "currency": "JPY", "card_token": "x"}}
    with pytest.raises(TaskValidationError) as caught:
        create_task("credit_card_payment", namespace="payments", context=bad)
    assert {e["path"] for e in caught.value.errors} == {
        "$.payment_info.amount",
        "$.payment_info.currency",
        "$.payment_info.card_token",
    }
    assert not Task.objects.exists()


@pytest.mark.django_db
def test_credit_card_environment_overrides() -> None:
    load(EXAMPLE_TEMPLATES / "payments" / "credit_card_payment", environment="production")
    named = NamedTask.objects.get(name="credit_card_payment")
    assert named.named_steps.get(name="check_fraud").handler_config == {"risk_threshold": 0.7}
    task = run_task_to_completion(
        create_task(
            "credit_card_payment", namespace="payments", context={**CARD, "risk_score": 0.75}
        )
    )
    assert task.steps.get(name="check_fraud").last_error["error_code"] == "FRAUD_SUSPECTED"


# -- every template through real workers -----------------------------------------------------

GOOD_CONTEXT = {
    "order_id": 1,
    "customer_id": 7,
    "amount": 42.5,
    "currency": "USD",
    "payment_info": {"amount": 42.5, "currency": "USD", "card_token": "tok_1234567890"},
}


@pytest.mark.workers
@pytest.mark.slow
def test_every_template_runs_to_completion_through_real_workers(workers: Any) -> None:
    load(EXAMPLE_TEMPLATES, SEED_DIR)
    templates = list(NamedTask.objects.filter(is_current=True).select_related("namespace"))
    assert len(templates) == 3 + len(list(SEED_DIR.glob("*.yaml")))
    tasks = {
        str(named): create_task(named.name, namespace=named.namespace.name, context=GOOD_CONTEXT)
        for named in templates
    }
    # And one that retries: the sweeper re-enqueues it after its backoff.
    tasks["linear_payment, retried"] = create_task(
        "linear_payment",
        namespace="payments",
        context={**GOOD_CONTEXT, "simulate_transient_failures": 1},
    )
    started = time.monotonic()
    workers.start(2)

    def finished() -> bool:
        return not Task.objects.filter(status__in=["pending", "in_progress"]).exists()

    wait_for(finished, timeout=60)
    failed = {
        label: list(task.steps.exclude(status="complete").values("name", "status", "last_error"))
        for label, task in tasks.items()
        if Task.objects.get(pk=task.pk).status != TaskStatus.COMPLETE
    }
    assert not failed, f"{failed}\n{workers.output()}"
    retried = tasks["linear_payment, retried"].steps.get(name="payment_processing")
    assert retried.attempts == 2
    assert time.monotonic() - started < 30


# -- escalations -------------------------------------------------------------------------------


def test_escalation_actions_cover_the_seed_rules_and_log(caplog: pytest.LogCaptureFixture) -> None:
    import importlib

    import yaml
    from django.utils.module_loading import import_string

    project_settings = importlib.import_module("example_project.settings")
    actions = project_settings.TASKER["ESCALATION_ACTIONS"]
    seed = yaml.safe_load((SEED_DIR / "payment_workflow.yaml").read_text())
    named = {rule["action"] for rule in seed["error_handling"]["escalation_rules"]}
    assert named <= set(actions)
    event = {"task_id": 5, "step_id": 9, "step_name": "payment_processing", "error": {}}
    with caplog.at_level("WARNING", logger="example_project.payments.escalations"):
        for path in actions.values():
            import_string(path)(event)
    assert len(caplog.records) == len(actions)
    assert "escalated to support: task 5 step 9 (payment_processing)" in caplog.text
