"""Step handlers of the example payments app.

tasker-django imports every installed app's ``tasker_handlers`` module at start-up;
each ``StepHandler`` subclass registers itself under its class name, which is how
the templates (``handler_class: PaymentProcessingStepHandler``, or Ruby-style
``PaymentProcessing::StepHandler::ValidatePaymentHandler``) find them.

The same handlers serve this project's templates (``task_templates/payments/``) and
the seed templates, so they read their settings from ``handler_config`` with
defaults and take values from the step inputs, the task context or its
``payment_info``, in that order. Nothing here talks to a real gateway: the
"external services" are simulated, including their transient failures.
"""

from __future__ import annotations

import hashlib
import random
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils import timezone

from tasker_django import PermanentError, RetryableError, StepHandler

from .metrics import measured
from .services import SimulatedAnalytics, SimulatedGateway, SimulatedNotifier

#: Notification channels the notification handler knows, unless its config narrows them.
NOTIFICATION_TYPES = ("email", "sms", "push")


# -- helpers ------------------------------------------------------------------------------


def _lookup(step: Any, task: Any, *keys: str) -> Any:
    """The first of ``keys`` found in the step inputs, the task context or its payment_info."""
    sources = [step.inputs, task.context, task.context.get("payment_info") or {}]
    for key in keys:
        for source in sources:
            if isinstance(source, dict) and source.get(key) is not None:
                return source[key]
    return None


def _invalid_amount(message: str, raw: Any) -> PermanentError:
    return PermanentError(
        message,
        error_code="INVALID_AMOUNT",
        error_category="validation",
        context={"amount": raw if isinstance(raw, int | float | str) else repr(raw)},
    )


def _to_amount(raw: Any) -> Decimal:
    """``raw`` as a positive finite Decimal, or PermanentError INVALID_AMOUNT."""
    if raw is None:
        raise _invalid_amount("the payment has no amount", raw)
    if isinstance(raw, bool):
        raise _invalid_amount(f"amount {raw!r} is not a number", raw)
    try:
        amount = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        raise _invalid_amount(f"amount {raw!r} is not a number", raw) from None
    if not amount.is_finite():
        raise _invalid_amount(f"amount {raw!r} is not a number", raw)
    if amount <= 0:
        raise _invalid_amount(f"amount must be positive, got {amount}", raw)
    return amount


def _money(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.01")))


def _stable_id(prefix: str, *parts: Any) -> str:
    """An id derived from ``parts``: a retried attempt gets the same one (an idempotency key)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()
    return f"{prefix}_{digest[:16]}"


def parent_payment(sequence: Any) -> dict[str, Any]:
    """The results of the nearest finished parent step that carries a ``payment_id``.

    ``sequence.steps`` holds the current step's parents (and the step itself) in
    position order, so the last match is the closest one upstream.
    """
    current = sequence.current
    for parent in reversed(sequence.steps):
        if current is not None and parent.id == current.id:
            continue
        results = parent.results
        if parent.is_finished and isinstance(results, dict) and results.get("payment_id"):
            return dict(results)
    return {}


# -- the payment workflows ------------------------------------------------------------------


@measured(
    "payment_processing_duration",
    rate="payment_success_rate",
    volume="payment_processing_volume",
)
class PaymentProcessingStepHandler(StepHandler):
    """Charges the customer through the configured gateway.

    Config: ``max_amount`` (default 10000), ``min_amount``, ``supported_currencies``,
    ``supported_payment_methods``, ``approval_threshold`` with ``approval_retry_after``
    (seconds, default 2), ``payment_gateway`` (or ``processor``), ``currency`` (default
    USD), ``fee_percent`` (default 2.9) and ``fee_fixed`` (default 0.30). The context key
    ``simulate_transient_failures: N`` makes the first N attempts time out.
    """

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        raw = _lookup(step, task, "amount", "payment_amount")
        amount = _to_amount(raw)
        currency = _lookup(step, task, "currency") or self.config.get("currency", "USD")
        methods = list(self.config.get("supported_payment_methods") or [])
        method = _lookup(step, task, "payment_method") or (methods[0] if methods else "card")

        min_amount = self.config.get("min_amount")
        if min_amount is not None and amount < Decimal(str(min_amount)):
            raise PermanentError(
                f"amount {amount} is below the minimum of {min_amount}",
                error_code="INVALID_AMOUNT",
                error_category="validation",
                context={"amount": raw, "minimum": min_amount},
            )
        max_amount = Decimal(str(self.config.get("max_amount", 10000)))
        if amount > max_amount:
            raise PermanentError(
                f"amount {amount} exceeds the limit of {max_amount}",
                error_code="AMOUNT_EXCEEDED",
                error_category="validation",
                context={"amount": raw, "limit": float(max_amount)},
            )
        currencies = self.config.get("supported_currencies")
        if currencies and currency not in currencies:
            raise PermanentError(
                f"currency {currency!r} is not supported (supported: {', '.join(currencies)})",
                error_code="UNSUPPORTED_CURRENCY",
                error_category="validation",
                context={"currency": currency},
            )
        if methods and method not in methods:
            raise PermanentError(
                f"payment method {method!r} is not supported (supported: {', '.join(methods)})",
                error_code="UNSUPPORTED_PAYMENT_METHOD",
                error_category="validation",
                context={"payment_method": method},
            )

        threshold = self.config.get("approval_threshold")
        if threshold is not None and amount > Decimal(str(threshold)) and step.attempts == 1:
            # Large payments wait for an approval; it has arrived by the next attempt.
            raise RetryableError(
                f"amount {amount} needs approval (above {threshold}); waiting for it",
                error_category="approval_pending",
                retry_after=float(self.config.get("approval_retry_after", 2)),
                context={"amount": raw, "threshold": threshold},
            )
        transient = int(task.context.get("simulate_transient_failures") or 0)
        if step.attempts <= transient:
            raise RetryableError(
                "payment gateway timed out (simulated)",
                error_category="external_service",
            )

        fee = amount * Decimal(str(self.config.get("fee_percent", 2.9))) / 100 + Decimal(
            str(self.config.get("fee_fixed", "0.30"))
        )
        payment_id = _stable_id("pay", task.id, step.id)
        # TASKER["SERVICES"]["payment_gateway"]; a test scenario's mock may decline.
        charged = self.service("payment_gateway", default=SimulatedGateway).charge(
            amount=_money(amount),
            currency=currency,
            payment_method=method,
            idempotency_key=payment_id,
        )
        return {
            "status": "completed",
            "payment_id": payment_id,
            "amount": _money(amount),
            "currency": currency,
            "payment_method": method,
            "gateway": self.config.get("payment_gateway")
            or self.config.get("processor")
            or "example_gateway",
            "fee": _money(fee),
            **(charged or {}),
        }

    def process_results(
        self, step: Any, process_output: Any, initial_results: Any = None
    ) -> dict[str, Any]:
        """Store the payment with audit metadata: which step, handler and attempt made it."""
        return {
            **process_output,
            "audit": {
                "step_id": step.id,
                "handler": self.handler_name,
                "attempt": step.attempts,
                "processed_at": timezone.now().isoformat(),
            },
        }


@measured()
class PaymentVerificationStepHandler(StepHandler):
    """Confirms the payment the parent step made (config ``verification_method``)."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        payment = parent_payment(sequence)
        if not payment:
            raise PermanentError(
                "no payment to verify: no parent step returned a payment_id",
                error_code="MISSING_PAYMENT",
                error_category="workflow",
            )
        return {
            "verified": True,
            "payment_id": payment["payment_id"],
            "amount": payment.get("amount"),
            "currency": payment.get("currency"),
            "method": self.config.get("verification_method", "webhook"),
        }


@measured(rate="notification_delivery_rate")
class NotificationStepHandler(StepHandler):
    """Tells the customer about the payment by email, sms or push.

    The type comes from the step inputs or the task context (``notification_type``),
    else from the config (default email); ``supported_types`` narrows the channels.
    The sms gateway fails transiently now and then (config ``sms_failure_rate``,
    default 0.3), but never on the step's last attempt, so the simulation alone
    never loses a notification.
    """

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        kind = (
            _lookup(step, task, "notification_type")
            or self.config.get("notification_type")
            or "email"
        )
        configured = self.config.get("supported_types") or NOTIFICATION_TYPES
        supported = [t for t in configured if t in NOTIFICATION_TYPES]
        if kind not in supported:
            raise PermanentError(
                f"notification type {kind!r} is not supported (supported: {', '.join(supported)})",
                error_code="UNSUPPORTED_TYPE",
                error_category="validation",
                context={"type": kind, "supported": supported},
            )
        if kind == "sms" and step.attempts < step.max_attempts:
            rate = float(self.config.get("sms_failure_rate", 0.3))
            draw = random.Random(f"{task.id}:{step.id}:{step.attempts}").random()
            if draw < rate:
                raise RetryableError(
                    "sms gateway unavailable (simulated)",
                    error_category="external_service",
                    context={"attempt": step.attempts},
                )
        payment = parent_payment(sequence)
        customer = task.context.get("customer_id", "unknown")
        recipients = {
            "email": task.context.get("customer_email") or f"customer-{customer}@example.com",
            "sms": task.context.get("customer_phone") or f"+1-555-{customer}",
            "push": f"device:customer-{customer}",
        }
        template = self.config.get("template") or self.config.get(
            "default_template", "payment_confirmation"
        )
        delivered = self.service("notification_service", default=SimulatedNotifier).send(
            kind=kind,
            recipient=recipients[kind],
            template=template,
            payment_id=payment.get("payment_id"),
        )
        return {
            "sent": True,
            "type": kind,
            "recipient": recipients[kind],
            "provider": (self.config.get("providers") or {}).get(kind, f"example_{kind}"),
            "template": template,
            "payment_id": payment.get("payment_id"),
            "amount": payment.get("amount"),
            "currency": payment.get("currency"),
            "message_id": _stable_id("msg", task.id, step.id),
            **(delivered or {}),
        }


@measured()
class CustomerUpdateStepHandler(StepHandler):
    """Records the payment in the customer's history (config ``update_fields``)."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        payment = parent_payment(sequence)
        return {
            "customer_id": task.context.get("customer_id"),
            "updated_fields": list(self.config.get("update_fields") or []),
            "payment_id": payment.get("payment_id"),
            "amount": payment.get("amount"),
        }


@measured()
class AnalyticsStepHandler(StepHandler):
    """Emits analytics for the payment (config ``metrics_to_track``)."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        payment = parent_payment(sequence)
        metrics = list(self.config.get("metrics_to_track") or [])
        tracked = self.service("analytics_service", default=SimulatedAnalytics).track(
            metrics=metrics, payment_id=payment.get("payment_id")
        )
        return {
            "tracked": metrics,
            "payment_id": payment.get("payment_id"),
            "steps_in_workflow": sequence.total_steps,
            **(tracked or {}),
        }


class AuditLogStepHandler(StepHandler):
    """Writes an audit record of the payment, without card data."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        payment = parent_payment(sequence)
        return {
            "logged": True,
            "payment_id": payment.get("payment_id"),
            "amount": payment.get("amount"),
            "currency": payment.get("currency"),
            "compliance_standard": self.config.get("compliance_standard", "PCI_DSS"),
            "log_level": self.config.get("log_level", "info"),
        }


# -- the credit-card flow: validate and check fraud, authorize (needs both), capture, confirm --


class ValidatePaymentHandler(StepHandler):
    """Checks the card payment's details (``payment_info``: amount, currency, card_token)."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        info = task.context.get("payment_info") or {}
        amount = _to_amount(info.get("amount"))
        token = str(info.get("card_token") or "")
        if not token:
            raise PermanentError(
                "the payment has no card token", error_code="INVALID_CARD", error_category="card"
            )
        return {
            "valid": True,
            "amount": _money(amount),
            "currency": info.get("currency", "USD"),
            "card_last4": token[-4:],
            "rules": list(self.config.get("validation_rules") or []),
        }


class FraudCheckHandler(StepHandler):
    """Scores the payment (context ``risk_score``, default 0.1) against ``risk_threshold``."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        score = float(task.context.get("risk_score", 0.1))
        threshold = float(self.config.get("risk_threshold", 0.8))
        if score > threshold:
            raise PermanentError(
                f"risk score {score:g} is above the threshold of {threshold:g}",
                error_code="FRAUD_SUSPECTED",
                error_category="fraud",
                context={"risk_score": score, "threshold": threshold},
            )
        return {"risk_score": score, "threshold": threshold, "passed": True}


class AuthorizePaymentHandler(StepHandler):
    """Authorizes the amount once validation and the fraud check have both passed."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        validation = sequence.step_results.get("validate_payment") or {}
        fraud = sequence.step_results.get("check_fraud") or {}
        if not (validation.get("valid") and fraud.get("passed")):
            raise PermanentError(
                "authorization needs a valid payment and a passed fraud check",
                error_code="PRECONDITION_FAILED",
                error_category="workflow",
            )
        return {
            "authorization_id": _stable_id("auth", task.id, step.id),
            "amount": validation.get("amount"),
            "currency": validation.get("currency"),
        }


class CapturePaymentHandler(StepHandler):
    """Captures the authorized amount (config ``auto_capture``, default true)."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        auth = sequence.step_results.get("authorize_payment") or {}
        if not auth.get("authorization_id"):
            raise PermanentError(
                "nothing to capture: no authorization",
                error_code="MISSING_AUTHORIZATION",
                error_category="workflow",
            )
        return {
            "payment_id": _stable_id("pay", task.id, step.id),
            "authorization_id": auth["authorization_id"],
            "captured": bool(self.config.get("auto_capture", True)),
            "amount": auth.get("amount"),
            "currency": auth.get("currency"),
        }


class SendConfirmationHandler(StepHandler):
    """Tells the customer that the card was charged (config ``template_id``)."""

    def process(self, task: Any, sequence: Any, step: Any) -> dict[str, Any]:
        payment = parent_payment(sequence)
        return {
            "sent": True,
            "template_id": self.config.get("template_id", "payment_confirmation"),
            "payment_id": payment.get("payment_id"),
            "amount": payment.get("amount"),
        }
