"""Success and failure conditions on a query result (ferry.core.conditions), as Argo Rollouts'
metric providers assess them."""

from __future__ import annotations

import pytest

from ferry.core.conditions import ConditionError, assess, compile_condition, evaluate_condition


@pytest.mark.parametrize(
    ("condition", "result", "holds"),
    [
        ("result[0] < 0.05", [0.01], True),
        ("result[0] < 0.05", [0.2], False),
        ("result < 0.05", 0.01, True),
        ("len(result) > 0 && result[0] >= 0.95", [0.99], True),
        ("len(result) > 0 && result[0] >= 0.95", [], False),
        ("result[0] > 1 || result[1] > 1", [0, 2], True),
        ("!(result[0] > 1)", [0], True),
        ("result[0] != 1", [0], True),
        ("isNaN(result[0])", [float("nan")], True),
        ("result[0] * 100 <= 5", [0.05], True),
        ("0 < result[0] < 1", [0.5], True),
    ],
)
def test_conditions_hold_or_not(condition: str, result: object, holds: bool) -> None:
    assert evaluate_condition(condition, result) is holds


@pytest.mark.parametrize(
    "condition", ["__import__('os')", "result.real", "open('x')", "[x for x in result]", "'a'"]
)
def test_anything_else_is_refused(condition: str) -> None:
    with pytest.raises(ConditionError, match="not allowed"):
        compile_condition(condition)


def test_an_empty_vector_cannot_be_indexed_an_error_measurement() -> None:
    with pytest.raises(ConditionError, match="result \\[\\]"):
        evaluate_condition("result[0] < 1", [])


def test_assess_as_argo_rollouts_does() -> None:
    ok, bad = "result[0] < 0.05", "result[0] >= 0.1"
    assert assess([0.01], ok, bad) == "successful"
    assert assess([0.5], ok, bad) == "failed"
    assert assess([0.07], ok, bad) == "inconclusive"  # neither holds
    assert assess([0.07], ok, None) == "failed"  # only success: not meeting it fails
    assert assess([0.07], None, bad) == "successful"  # only failure: not meeting it passes
    assert assess([0.5], None, None) == "successful"
