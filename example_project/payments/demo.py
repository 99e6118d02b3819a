"""The demo batch: which payments ``payments_demo`` submits, what each should end as,
and the summary of how they did end.

Every submission carries its expected outcome, so the demo can tell an intended
failure (an amount above the limit) from an unintended one (anything else).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

NAMESPACE = "payments"
TEMPLATES = ("linear_payment", "payment_fanout", "credit_card_payment")

#: The demo superuser (created only on a DEBUG, i.e. development, database).
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo"

COMPLETE = "complete"
ERROR = "error"
REJECTED = "rejected"


@dataclass(frozen=True)
class Submission:
    """One payment of the batch and what it should end as."""

    number: int
    template: str
    scenario: str
    context: dict[str, Any]
    expect: str = COMPLETE  # complete | error | rejected
    error_code: str = ""  # for expect == error: the failed step's error code
    retries: bool = False  # at least one retry is part of the scenario


@dataclass
class Outcome:
    """What happened to one submission."""

    submission: Submission
    status: str  # a task status, or "rejected"
    task_id: int | None = None
    error_code: str = ""
    error_step: str = ""
    error_message: str = ""
    retries: int = 0
    seconds: float | None = None  # created -> completed, for finished tasks
    retried: list[tuple[str, str]] = field(default_factory=list)  # (step, error message)

    @property
    def problem(self) -> str:
        """Why this outcome is not the intended one ("" if it is)."""
        s = self.submission
        if self.status != s.expect:
            detail = f" ({self.error_code}: {self.error_message})" if self.error_code else ""
            return f"expected {s.expect}, ended {self.status}{detail}"
        if s.expect == ERROR and self.error_code != s.error_code:
            return f"expected error {s.error_code}, got {self.error_code or 'no code'}"
        if s.retries and self.retries == 0:
            return "expected at least one retry, saw none"
        return ""


# -- the batch -----------------------------------------------------------------------------


def _customer(rng: random.Random) -> int:
    return rng.randint(1000, 9999)


def _linear(rng: random.Random, **extra: Any) -> dict[str, Any]:
    return {
        "amount": round(rng.uniform(10, 900), 2),
        "currency": rng.choice(["USD", "EUR", "GBP"]),
        "customer_id": _customer(rng),
        "payment_method": "credit_card",
        **extra,
    }


def _fanout(rng: random.Random, **extra: Any) -> dict[str, Any]:
    return {
        "amount": round(rng.uniform(10, 2000), 2),
        "currency": "USD",
        "customer_id": _customer(rng),
        "notification_type": "email",
        **extra,
    }


def _card(rng: random.Random, risk: float | None = None, **info: Any) -> dict[str, Any]:
    return {
        "order_id": rng.randint(10_000, 99_999),
        "customer_id": _customer(rng),
        "risk_score": round(rng.uniform(0.01, 0.4), 2) if risk is None else risk,
        "payment_info": {
            "amount": round(rng.uniform(5, 1500), 2),
            "currency": rng.choice(["USD", "EUR", "GBP"]),
            "card_token": f"tok_{rng.getrandbits(48):012x}",
            **info,
        },
    }


# (template, scenario, context builder, expectation). The first ten cover every kind,
# which is what --short submits.
PATTERN: list[tuple[str, str, Callable[[random.Random], dict[str, Any]], dict[str, Any]]] = [
    ("linear_payment", "paid", lambda r: _linear(r), {}),
    ("payment_fanout", "paid", lambda r: _fanout(r), {}),
    ("credit_card_payment", "paid", lambda r: _card(r), {}),
    (
        "linear_payment",
        "gateway timeout, retried",
        lambda r: _linear(r, simulate_transient_failures=1),
        {"retries": True},
    ),
    (
        "payment_fanout",
        "approval needed, retried",
        lambda r: _fanout(r, amount=round(r.uniform(2600, 4900), 2)),
        {"retries": True},
    ),
    ("linear_payment", "paid, sms (flaky)", lambda r: _linear(r, notification_type="sms"), {}),
    (
        "linear_payment",
        "zero amount",
        lambda r: _linear(r, amount=0),
        {"expect": ERROR, "error_code": "INVALID_AMOUNT"},
    ),
    (
        "payment_fanout",
        "above the limit",
        lambda r: _fanout(r, amount=7500),
        {"expect": ERROR, "error_code": "AMOUNT_EXCEEDED"},
    ),
    (
        "payment_fanout",
        "unknown notification",
        lambda r: _fanout(r, notification_type="carrier_pigeon"),
        {"expect": ERROR, "error_code": "UNSUPPORTED_TYPE"},
    ),
    (
        "credit_card_payment",
        "fraud suspected",
        lambda r: _card(r, risk=0.97),
        {"expect": ERROR, "error_code": "FRAUD_SUSPECTED"},
    ),
    ("linear_payment", "paid", lambda r: _linear(r), {}),
    ("payment_fanout", "paid, sms (flaky)", lambda r: _fanout(r, notification_type="sms"), {}),
    ("payment_fanout", "paid, push", lambda r: _fanout(r, notification_type="push"), {}),
    ("credit_card_payment", "paid", lambda r: _card(r), {}),
    (
        "linear_payment",
        "gateway timeouts, retried twice",
        lambda r: _linear(r, simulate_transient_failures=2),
        {"retries": True},
    ),
    ("credit_card_payment", "paid", lambda r: _card(r), {}),
    ("payment_fanout", "paid", lambda r: _fanout(r), {}),
    ("linear_payment", "paid, push", lambda r: _linear(r, notification_type="push"), {}),
    ("credit_card_payment", "paid", lambda r: _card(r), {}),
    (
        "linear_payment",
        "above the limit",
        lambda r: _linear(r, amount=25_000),
        {"expect": ERROR, "error_code": "AMOUNT_EXCEEDED"},
    ),
]

#: The one context the credit-card template's JSON Schema rejects.
REJECTED_CONTEXT: dict[str, Any] = {
    "order_id": 4242,
    "customer_id": 7,
    "payment_info": {"amount": -25, "currency": "JPY", "card_token": "tok_1"},
}


def build_batch(count: int, seed: int = 4) -> list[Submission]:
    """``count`` submissions: the pattern repeated, with the schema-rejected one in the middle."""
    if count < 2:
        raise ValueError("the batch needs at least 2 payments")
    rng = random.Random(seed)
    batch: list[Submission] = []
    for i in range(count - 1):
        template, scenario, build, expect = PATTERN[i % len(PATTERN)]
        batch.append(Submission(0, template, scenario, build(rng), **expect))
    rejected = Submission(
        0,
        "credit_card_payment",
        "rejected by the schema",
        REJECTED_CONTEXT,
        expect=REJECTED,
    )
    batch.insert(count // 2, rejected)
    return [
        Submission(n, s.template, s.scenario, s.context, s.expect, s.error_code, s.retries)
        for n, s in enumerate(batch, start=1)
    ]


# -- the summary ---------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(math.ceil(pct / 100 * len(ordered)), 1)
    return ordered[rank - 1]


@dataclass
class Row:
    template: str
    payments: int = 0
    complete: int = 0
    error: int = 0
    rejected: int = 0
    other: int = 0
    retries: int = 0
    seconds: list[float] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.payments += 1
        self.retries += outcome.retries
        if outcome.status == COMPLETE:
            self.complete += 1
            if outcome.seconds is not None:
                self.seconds.append(outcome.seconds)
        elif outcome.status == ERROR:
            self.error += 1
        elif outcome.status == REJECTED:
            self.rejected += 1
        else:
            self.other += 1

    def cells(self) -> list[str]:
        mean = f"{sum(self.seconds) / len(self.seconds):.2f} s" if self.seconds else "-"
        p95 = f"{percentile(self.seconds, 95):.2f} s" if self.seconds else "-"
        return [
            self.template,
            str(self.payments),
            str(self.complete),
            str(self.error),
            str(self.rejected),
            str(self.retries),
            mean,
            p95,
        ]


HEADER = ["template", "payments", "complete", "error", "rejected", "retries", "mean", "p95"]


def summary_rows(outcomes: Iterable[Outcome]) -> list[Row]:
    """One row per template (in TEMPLATES order) and a total row."""
    rows = {name: Row(name) for name in TEMPLATES}
    total = Row("total")
    for outcome in outcomes:
        rows.setdefault(outcome.submission.template, Row(outcome.submission.template))
        rows[outcome.submission.template].add(outcome)
        total.add(outcome)
    return [*rows.values(), total]


def format_table(rows: list[Row]) -> list[str]:
    """The rows as an aligned text table (text left, numbers right)."""
    table = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(table[0]), rule, *(line(r) for r in table[1:-1]), rule, line(table[-1])]
