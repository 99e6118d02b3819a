"""Step handlers of the example payments app.

tasker-django imports every installed app's ``tasker_handlers`` module at start-up;
each ``StepHandler`` subclass registers itself under its class name, which is how
the templates (``handler_class: PaymentProcessingStepHandler``, or Ruby-style
``PaymentProcessing::StepHandler::ValidatePaymentHandler``) find them.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils import timezone

from tasker_django import PermanentError, RetryableError, StepHandler


def _lookup(step: Any, task: Any, *keys: str) -> Any:
    """The first of ``keys`` found in the step inputs, the task context or its payment_info."""
    sources = [step.inputs, task.context, task.context.get("payment_info") or {}]
    for key in keys:
        for source in sources:
            if isinstance(source, dict) and source.get(key) is not None:
                return source[key]
    return None


def _amount(step: Any, task: Any) -> Decimal:
    raw = _lookup(step, task, "amount", "payment_amount")
    try:
        return Decimal(str(raw))
    except (InvalidOperation, ValueError):
        raise PermanentError(
            f"amount {raw!r} is not a number",
            error_code="INVALID_AMOUNT",
            error_category="validation",
            context={"amount": str(raw)},
        ) from None


class PaymentProcessingStepHandler(StepHandler):
    """Charges the customer through the configured gateway."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        amount = _amount(step, task)
        currency = _lookup(step, task, "currency") or self.config.get("currency", "USD")
        method = _lookup(step, task, "payment_method") or "credit_card"
        if amount <= 0:
            raise PermanentError(
                f"amount must be positive, got {amount}",
                error_code="INVALID_AMOUNT",
                error_category="validation",
                context={"amount": str(amount)},
            )
        max_amount = Decimal(str(self.config.get("max_amount", 10000)))
        if amount > max_amount:
            raise PermanentError(
                f"amount {amount} exceeds the limit of {max_amount}",
                error_code="AMOUNT_EXCEEDED",
                error_category="validation",
                context={"amount": str(amount), "limit": str(max_amount)},
            )
        supported = self.config.get("supported_currencies")
        if supported and currency not in supported:
            raise PermanentError(
                f"currency {currency} is not supported",
                error_code="UNSUPPORTED_CURRENCY",
                error_category="validation",
            )
        threshold = self.config.get("approval_threshold")
        if threshold is not None and amount > Decimal(str(threshold)) and step.attempts < 2:
            raise RetryableError(
                f"amount {amount} needs approval; checking again shortly",
                error_category="approval_pending",
                retry_after=float(self.config.get("approval_retry_after", 2)),
            )
        transient = int(task.context.get("simulate_transient_failures") or 0)
        if step.attempts <= transient:
            raise RetryableError(
                f"gateway timeout (simulated, attempt {step.attempts})",
                error_category="external_service",
            )
        fee = (amount * Decimal("0.029") + Decimal("0.30")).quantize(Decimal("0.01"))
        return {
            "status": "completed",
            "payment_id": f"pay_{uuid.uuid4().hex[:16]}",
            "amount": float(amount),
            "currency": currency,
            "payment_method": method,
            "gateway": self.config.get("payment_gateway")
            or self.config.get("processor")
            or "example_gateway",
            "fee": float(fee),
        }

    def process_results(
        self, step: Any, process_output: Any, initial_results: Any = None
    ) -> dict[str, Any]:
        return {
            **process_output,
            "audit": {
                "step_id": step.id,
                "handler": type(self).__name__,
                "attempt": step.attempts,
                "processed_at": timezone.now().isoformat(),
            },
        }


def _payment(sequence: Any) -> dict[str, Any]:
    for name in ("payment_processing", "capture_payment", "authorize_payment"):
        result = sequence.step_results.get(name)
        if result:
            return dict(result)
    return {}


class PaymentVerificationStepHandler(StepHandler):
    """Confirms the payment the previous step made."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        payment = _payment(sequence)
        if not payment.get("payment_id"):
            raise PermanentError(
                "no payment to verify", error_code="MISSING_PAYMENT", error_category="workflow"
            )
        return {
            "verified": True,
            "payment_id": payment["payment_id"],
            "method": self.config.get("verification_method", "webhook"),
        }


class NotificationStepHandler(StepHandler):
    """Sends a notification by email, sms or push; sms fails transiently now and then."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        kind = (
            _lookup(step, task, "notification_type")
            or self.config.get("notification_type")
            or "email"
        )
        supported = self.config.get("supported_types") or ["email", "sms", "push"]
        if kind not in supported:
            raise PermanentError(
                f"notification type {kind!r} is not supported",
                error_code="UNSUPPORTED_TYPE",
                error_category="validation",
                context={"type": kind, "supported": list(supported)},
            )
        if kind == "sms":
            rate = float(self.config.get("sms_failure_rate", 0.3))
            seed = hashlib.sha256(f"{task.id}:{step.attempts}".encode()).hexdigest()
            if random.Random(seed).random() < rate:
                raise RetryableError("sms gateway unavailable", error_category="external_service")
        payment = _payment(sequence)
        return {
            "sent": True,
            "type": kind,
            "recipient": task.context.get("customer_email")
            or f"customer-{task.context.get('customer_id', '?')}",
            "payment_id": payment.get("payment_id"),
            "template": self.config.get("template")
            or self.config.get("default_template", "payment_confirmation"),
        }


class CustomerUpdateStepHandler(StepHandler):
    """Records the payment in the customer's history."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        return {
            "customer_id": task.context.get("customer_id"),
            "updated_fields": list(self.config.get("update_fields") or []),
        }


class AnalyticsStepHandler(StepHandler):
    """Emits analytics for the payment."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        return {
            "tracked": list(self.config.get("metrics_to_track") or []),
            "steps_seen": sequence.total_steps,
        }


class AuditLogStepHandler(StepHandler):
    """Writes an audit record of the payment (never the card data)."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        payment = _payment(sequence)
        return {
            "logged": True,
            "payment_id": payment.get("payment_id"),
            "compliance_standard": self.config.get("compliance_standard", "PCI_DSS"),
        }


class ValidatePaymentHandler(StepHandler):
    """Credit-card flow: checks the payment details."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        info = task.context.get("payment_info") or {}
        if float(info.get("amount", 0)) <= 0:
            raise PermanentError(
                "amount must be positive", error_code="INVALID_AMOUNT", error_category="validation"
            )
        return {"valid": True, "rules": list(self.config.get("validation_rules") or [])}


class FraudCheckHandler(StepHandler):
    """Credit-card flow: scores the payment for fraud."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        score = float(task.context.get("risk_score", 0.1))
        threshold = float(self.config.get("risk_threshold", 0.8))
        if score > threshold:
            raise PermanentError(
                f"risk score {score} above threshold {threshold}",
                error_code="FRAUD_SUSPECTED",
                error_category="fraud",
                context={"risk_score": score, "threshold": threshold},
            )
        return {"risk_score": score, "threshold": threshold, "passed": True}


class AuthorizePaymentHandler(StepHandler):
    """Credit-card flow: authorizes once validation and the fraud check both passed."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        validation = sequence.step_results.get("validate_payment") or {}
        fraud = sequence.step_results.get("check_fraud") or {}
        if not (validation.get("valid") and fraud.get("passed")):
            raise PermanentError(
                "authorization needs a valid payment and a passed fraud check",
                error_code="PRECONDITION_FAILED",
                error_category="workflow",
            )
        info = task.context.get("payment_info") or {}
        return {"authorization_id": f"auth_{uuid.uuid4().hex[:12]}", "amount": info.get("amount")}


class CapturePaymentHandler(StepHandler):
    """Credit-card flow: captures the authorized amount."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        auth = sequence.step_results.get("authorize_payment") or {}
        return {
            "payment_id": f"pay_{uuid.uuid4().hex[:16]}",
            "authorization_id": auth.get("authorization_id"),
            "captured": bool(self.config.get("auto_capture", True)),
            "amount": auth.get("amount"),
        }


class SendConfirmationHandler(StepHandler):
    """Credit-card flow: tells the customer."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        capture = sequence.step_results.get("capture_payment") or {}
        return {
            "sent": True,
            "template_id": self.config.get("template_id", "payment_confirmation"),
            "payment_id": capture.get("payment_id"),
        }
