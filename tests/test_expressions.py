"""Template conditions: normalised, checked, evaluated without eval."""

from __future__ import annotations

import pytest

from tasker_django.expressions import ExpressionError, compile_condition, normalize


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("payment_amount >= 1", {"payment_amount": 5}, True),
        ("payment_amount <= 10000", {"payment_amount": 20000}, False),
        ("currency in ['USD', 'EUR', 'GBP']", {"currency": "EUR"}, True),
        ("currency in ['USD', 'EUR', 'GBP']", {"currency": "JPY"}, False),
        ("retry_count >= 3", {"retry_count": 3}, True),
        (
            "payment_amount > 1000 AND error_type == 'card_declined'",
            {"payment_amount": 1500, "error_type": "card_declined"},
            True,
        ),
        (
            "payment_amount > 1000 AND error_type == 'card_declined'",
            {"payment_amount": 500, "error_type": "card_declined"},
            False,
        ),
        ("success_rate < 0.95", {"success_rate": 0.9}, True),
        ("step_execution_time > 30s", {"step_execution_time": 31}, True),
        ("step_execution_time > 30s", {"step_execution_time": 29}, False),
        ("latency > 500ms OR NOT ok", {"latency": 0.2, "ok": False}, True),
    ],
)
def test_conditions_from_the_seed_templates(text: str, values: dict, expected: bool) -> None:
    assert compile_condition(text).evaluate(values) is expected


def test_missing_names_make_a_condition_false() -> None:
    assert compile_condition("retry_count >= 3").evaluate({}) is False


def test_type_errors_make_a_condition_false() -> None:
    assert compile_condition("amount > 3").evaluate({"amount": "x"}) is False


def test_durations_and_words_are_normalised_outside_strings() -> None:
    assert normalize("t > 2m AND s == 'AND 5s'") == "t >120.0 and s =='AND 5s'"


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "().__class__.__bases__",
        "[x for x in range(10**9)]",
        "lambda: 1",
        "a = 1",
    ],
)
def test_code_is_refused(text: str) -> None:
    with pytest.raises(ExpressionError):
        compile_condition(text)


@pytest.mark.parametrize("text", ["", "   ", None, 5, "amount >", "amount >= (1"])
def test_bad_conditions_are_clear_errors(text: object) -> None:
    with pytest.raises(ExpressionError):
        compile_condition(text)


def test_allowed_names_are_enforced() -> None:
    with pytest.raises(ExpressionError, match="unknown name"):
        compile_condition("amount > 1 and secret == 2", allowed_names={"amount"})
    assert compile_condition("amount > 1", allowed_names={"amount"}).names == {"amount"}
