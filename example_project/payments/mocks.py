"""Mock services for the seed payment workflow's test scenarios.

``TASKER["MOCK_SERVICES"]`` maps the names the template's ``testing.mock_services``
uses (``mock_stripe``, ``mock_email``, ``mock_analytics``) to these classes. Each is
created once per scenario run with the scenario (a
``tasker_django.testing.scenarios.Scenario``) and records what the handlers asked
of it, so a pytest test can inspect ``result.mocks["payment_gateway"].charges``.
"""

from __future__ import annotations

from typing import Any

from .services import CardDeclinedError, InsufficientFundsError

#: Errors the mock gateway raises when a scenario expects them.
DECLINES = {
    "CardDeclinedError": CardDeclinedError,
    "CARD_DECLINED": CardDeclinedError,
    "InsufficientFundsError": InsufficientFundsError,
    "INSUFFICIENT_FUNDS": InsufficientFundsError,
}


class MockStripe:
    """The payment gateway: charges succeed unless the scenario expects a decline.

    A scenario with ``expected_error: CardDeclinedError`` (or ``InsufficientFundsError``,
    or their error codes) gets that error on every charge.
    """

    def __init__(self, scenario: Any) -> None:
        self.scenario = scenario
        self.charges: list[dict[str, Any]] = []

    def charge(
        self, *, amount: float, currency: str, payment_method: str, idempotency_key: str
    ) -> dict[str, Any]:
        self.charges.append(
            {
                "amount": amount,
                "currency": currency,
                "payment_method": payment_method,
                "idempotency_key": idempotency_key,
            }
        )
        error = DECLINES.get(self.scenario.expected_error or "")
        if error is not None:
            raise error(f"mock_stripe declined the charge of {amount} {currency}", amount=amount)
        return {"gateway": "mock_stripe", "charge_id": f"ch_mock_{idempotency_key[-8:]}"}


class MockEmail:
    """The notification service: records every message instead of sending it."""

    def __init__(self, scenario: Any) -> None:
        self.scenario = scenario
        self.sent: list[dict[str, Any]] = []

    def send(self, *, kind: str, recipient: str, template: str, payment_id: Any) -> dict[str, Any]:
        self.sent.append(
            {"kind": kind, "recipient": recipient, "template": template, "payment_id": payment_id}
        )
        return {"provider": "mock_email"}


class MockAnalytics:
    """The analytics service: records every tracked payment."""

    def __init__(self, scenario: Any) -> None:
        self.scenario = scenario
        self.tracked: list[dict[str, Any]] = []

    def track(self, *, metrics: list[str], payment_id: Any) -> dict[str, Any]:
        self.tracked.append({"metrics": list(metrics), "payment_id": payment_id})
        return {}
