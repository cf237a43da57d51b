"""Success and failure conditions on a metric's query result, as Argo Rollouts writes them:
`result[0] < 0.05`, `len(result) > 0 && result[0] >= 0.95`, `result == 0` (pure, no eval).

`result` is the query's value: a number for a scalar, a list of numbers for a vector (one per
series). A condition is a small expression: numbers, `result`, indexing with an integer,
`len(...)`, `isNaN(...)`, `isInf(...)`, comparisons, `&&`/`and`, `||`/`or`, `!`/`not`, `+ - * /`
and parentheses. Anything else is refused when ferry.yaml is loaded, not when the canary runs.

A condition that cannot be evaluated on a result (an index past the end of an empty vector)
raises ConditionError: the measurement is then an `error`, as Argo Rollouts does.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any, Literal

# What one measurement says (docs/events.md, stream ferry:canary).
MeasurementPhase = Literal["successful", "failed", "inconclusive", "error"]


class ConditionError(ValueError):
    """A condition that is not allowed, or cannot be evaluated on this result."""


_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_ARITH = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_FUNCS: dict[str, Callable[[Any], Any]] = {"len": len, "isNaN": math.isnan, "isInf": math.isinf}


def _python(text: str) -> str:
    # expr-lang's && || ! as Python's and or not ("!=" stays).
    text = text.replace("&&", " and ").replace("||", " or ")
    return re.sub(r"!(?!=)", " not ", text)


def compile_condition(text: str) -> ast.Expression:
    """Parse TEXT and check it uses only what conditions may use; ConditionError otherwise."""
    try:
        tree = ast.parse(_python(text).strip(), mode="eval")
    except SyntaxError as e:
        raise ConditionError(f"condition {text!r} is not an expression: {e.msg}") from None
    for node in ast.walk(tree):
        allowed = (
            isinstance(node, ast.Expression | ast.BoolOp | ast.And | ast.Or | ast.Compare)
            or isinstance(node, ast.UnaryOp | ast.Not | ast.USub | ast.BinOp | ast.Subscript)
            or isinstance(node, ast.Load)
            or type(node) in _COMPARE
            or type(node) in _ARITH
            or (isinstance(node, ast.Constant) and type(node.value) in (int, float, bool))
            or (isinstance(node, ast.Name) and node.id in ("result", *_FUNCS, "true", "false"))
            or (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in _FUNCS
                and len(node.args) == 1
                and not node.keywords
            )
        )
        if not allowed:
            what = ast.unparse(node) if isinstance(node, ast.expr) else type(node).__name__
            raise ConditionError(
                f"condition {text!r}: {what!r} is not allowed (use result, numbers, result[i], "
                "len(), isNaN(), comparisons, &&, ||, !)"
            )
    return tree


def evaluate_condition(text: str, result: Any) -> bool:
    """Whether condition TEXT holds for RESULT; ConditionError when it cannot be evaluated."""
    tree = compile_condition(text)
    try:
        return bool(_eval(tree.body, result))
    except (IndexError, TypeError, ZeroDivisionError) as e:
        raise ConditionError(f"condition {text!r} on result {result!r}: {e}") from None


def _eval(node: ast.expr, result: Any) -> Any:  # noqa: PLR0911 - one branch per node type
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return {"true": True, "false": False}.get(node.id, result)
    if isinstance(node, ast.Subscript):
        return _eval(node.value, result)[_eval(node.slice, result)]
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        return _FUNCS[node.func.id](_eval(node.args[0], result))
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, result)
        return (not value) if isinstance(node.op, ast.Not) else -value
    if isinstance(node, ast.BinOp):
        return _ARITH[type(node.op)](_eval(node.left, result), _eval(node.right, result))
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, result) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, result)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, result)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    raise ConditionError(f"cannot evaluate {ast.unparse(node)!r}")


def assess(result: Any, success: str | None, failure: str | None) -> MeasurementPhase:
    """A measurement's phase from a query result, as Argo Rollouts' metric providers decide it:
    the failure condition is checked first; with only a success condition, not meeting it is a
    failure; with only a failure condition, not meeting it is a success; with both and neither
    met, the measurement is inconclusive. ConditionError (an `error`) when one cannot be
    evaluated."""
    if success is None and failure is None:
        return "successful"
    failed = evaluate_condition(failure, result) if failure is not None else None
    succeeded = evaluate_condition(success, result) if success is not None else None
    if failed:
        return "failed"
    if succeeded:
        return "successful"
    if failure is None:
        return "failed"  # only a success condition, and it does not hold
    if success is None:
        return "successful"  # only a failure condition, and it does not hold
    return "inconclusive"
