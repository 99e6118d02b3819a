"""The "external services" of the example payments app, and the errors they raise.

Handlers get them with ``self.service("payment_gateway")`` (and
``notification_service``, ``analytics_service``): ``TASKER["SERVICES"]`` in the
example settings names these classes. Nothing here talks to a real provider. In a
test scenario the template's ``testing.mock_services`` replaces them with the
classes of :mod:`example_project.payments.mocks`.
"""

from __future__ import annotations

from typing import Any

from tasker_django import PermanentError


class CardDeclinedError(PermanentError):
    """The gateway declined the card (permanent: a retry gets the same answer)."""

    def __init__(self, message: str = "the card was declined", **context: Any) -> None:
        super().__init__(
            message, error_code="CARD_DECLINED", error_category="payment", context=context
        )


class InsufficientFundsError(PermanentError):
    """The gateway refused the charge for lack of funds."""

    def __init__(self, message: str = "insufficient funds", **context: Any) -> None:
        super().__init__(
            message, error_code="INSUFFICIENT_FUNDS", error_category="payment", context=context
        )


class SimulatedGateway:
    """Accepts every charge; adds nothing to the payment's results."""

    def charge(
        self, *, amount: float, currency: str, payment_method: str, idempotency_key: str
    ) -> dict[str, Any]:
        return {}


class SimulatedNotifier:
    """Delivers every notification; adds nothing to the step's results."""

    def send(self, *, kind: str, recipient: str, template: str, payment_id: Any) -> dict[str, Any]:
        return {}


class SimulatedAnalytics:
    """Accepts every analytics event; adds nothing to the step's results."""

    def track(self, *, metrics: list[str], payment_id: Any) -> dict[str, Any]:
        return {}
