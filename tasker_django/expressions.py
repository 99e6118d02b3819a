"""Conditions written in templates, evaluated safely (I12: never ``eval``).

Templates write conditions such as ``payment_amount >= 1``,
``currency in ['USD', 'EUR', 'GBP']``, ``retry_count >= 3``,
``payment_amount > 1000 AND error_type == 'card_declined'`` or
``step_execution_time > 30s``. They are normalised (``AND``/``OR``/``NOT`` to
lower case, duration literals ``500ms``/``30s``/``5m``/``2h``/``1d`` to seconds),
parsed once, checked against the names a kind of condition may use, and
evaluated by simpleeval (a well-kept safe evaluator: no attribute access to
dunders, no calls unless whitelisted, bounded sizes). Pure Python, no Django.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression, NameNotDefined

_KEYWORDS = {"AND": "and", "OR": "or", "NOT": "not", "TRUE": "True", "FALSE": "False"}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ALLOWED_NODES = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
    ast.Is,
    ast.IsNot,
    ast.BinOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.Mod,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.List,
    ast.Tuple,
    ast.Subscript,
)


class ExpressionError(ValueError):
    """A condition that cannot be parsed, uses a name it may not, or fails to evaluate."""


def normalize(text: str) -> str:
    """Upper-case boolean words to Python's, duration literals to seconds."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text.strip()).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError) as exc:
        raise ExpressionError(f"cannot read condition {text!r}: {exc}") from None
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if (
            tok.type == tokenize.NUMBER
            and nxt is not None
            and nxt.type == tokenize.NAME
            and nxt.string in _UNITS
            and nxt.start == tok.end
        ):
            seconds = float(tok.string) * _UNITS[nxt.string]
            out.append((tokenize.NUMBER, repr(seconds)))
            i += 2
            continue
        if tok.type == tokenize.NAME and tok.string in _KEYWORDS:
            out.append((tokenize.NAME, _KEYWORDS[tok.string]))
        else:
            out.append((tok.type, tok.string))
        i += 1
    return tokenize.untokenize(out).strip()


@dataclass(frozen=True)
class Condition:
    source: str
    normalized: str
    names: frozenset[str] = field(default_factory=frozenset)

    def evaluate(self, values: Mapping[str, Any]) -> bool:
        """True or False; a name without a value makes the condition False."""
        if not self.names <= set(values):
            return False
        evaluator = EvalWithCompoundTypes(names=dict(values), functions={})
        try:
            return bool(evaluator.eval(self.normalized))
        except (NameNotDefined, TypeError, ZeroDivisionError):
            return False
        except InvalidExpression as exc:
            raise ExpressionError(f"condition {self.source!r} failed: {exc}") from None


def compile_condition(text: Any, allowed_names: Iterable[str] | None = None) -> Condition:
    """Parse and check a condition; ``allowed_names=None`` allows any name."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("a condition must be a non-empty string")
    normalized = normalize(text)
    try:
        tree = ast.parse(normalized, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"condition {text!r} is not valid: {exc.msg}") from None
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ExpressionError(
                f"condition {text!r} uses {type(node).__name__}, which conditions may not use"
            )
        if isinstance(node, ast.Name) and node.id not in {"True", "False", "None"}:
            names.add(node.id)
    if allowed_names is not None:
        allowed = set(allowed_names)
        unknown = sorted(names - allowed)
        if unknown:
            raise ExpressionError(
                f"condition {text!r} uses unknown name(s) {', '.join(unknown)}; "
                f"it may use: {', '.join(sorted(allowed)) or 'nothing'}"
            )
    return Condition(source=text, normalized=normalized, names=frozenset(names))
