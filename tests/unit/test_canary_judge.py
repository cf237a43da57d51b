"""The canary judge (ferry.core.canary): plain measurements in, Argo Rollouts' verdicts out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.core.canary import ORDER, Measurement, judge
from ferry.core.policy import Canary, PolicyError, load_policy

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
LETTER = {"s": "successful", "f": "failed", "i": "inconclusive", "e": "error"}


def seq(text: str, metric: str = "m", start: int = 0) -> list[Measurement]:
    """'ssfe' -> successful, successful, failed, error of METRIC, a second apart."""
    return [
        Measurement(metric, LETTER[c], T0 + timedelta(seconds=start + i))  # type: ignore[arg-type]
        for i, c in enumerate(text)
    ]


def canary(**kw: object) -> Canary:
    return Canary.model_validate({"count": 3, **kw})


NOW = T0 + timedelta(minutes=1)

TABLE = [
    # (limits, measurements of metric m, expected phase)
    ({}, "sss", "successful"),
    ({}, "ss", "running"),
    ({}, "f", "failed"),  # failure_limit 0: one failure is one too many
    ({"failure_limit": 1}, "fss", "successful"),  # at the limit: still fine
    ({"failure_limit": 1}, "ff", "failed"),  # limit + 1
    ({"failure_limit": 2}, "sfff", "failed"),  # limit + 1
    ({"inconclusive_limit": 0}, "si", "inconclusive"),  # the canary pauses
    ({"inconclusive_limit": 1}, "sis", "successful"),
    ({"inconclusive_limit": 1}, "ii", "inconclusive"),
    ({}, "eeee", "running"),  # 4 errors in a row: at the limit
    ({}, "eeeee", "error"),  # 5 in a row: over it
    ({}, "eeeeseeee", "running"),  # a non-error measurement resets the streak
    ({}, "eeeesseeees", "successful"),  # ...and errors never count toward count
    ({}, "eseses", "successful"),
    ({"consecutive_error_limit": 0}, "e", "error"),
    ({}, "ssf", "failed"),  # failed beats count reached
    ({"count": 1}, "s", "successful"),
]


@pytest.mark.parametrize(("limits", "measured", "expected"), TABLE)
def test_table_of_sequences(limits: dict, measured: str, expected: str) -> None:
    assert judge(canary(**limits), seq(measured), T0, NOW).phase == expected


def test_errors_do_not_count_toward_count() -> None:
    verdict = judge(canary(), seq("eesees"), T0, NOW)
    assert verdict.phase == "running"
    (m,) = verdict.metrics
    assert (m.successful, m.errors) == (2, 4)
    assert "2/3 measurements judged" in m.reason


def test_the_run_is_the_worst_of_its_metrics() -> None:
    passing = seq("sss", "latency")
    assert judge(canary(), passing, T0, NOW).phase == "successful"
    assert judge(canary(), passing + seq("ss", "errors"), T0, NOW).phase == "running"
    assert judge(canary(), passing + seq("si", "errors"), T0, NOW).phase == "inconclusive"
    assert judge(canary(), passing + seq("eeeee", "errors"), T0, NOW).phase == "error"
    both = passing + seq("eeeee", "errors") + seq("f", "saturation")
    verdict = judge(canary(), both, T0, NOW)
    assert verdict.phase == "failed"
    assert verdict.reason.startswith("saturation: 1 failed measurements, limit 0")
    assert [m.metric for m in verdict.blamed] == ["saturation"]


def test_a_declared_metric_without_measurements_keeps_the_run_running() -> None:
    policy = canary(metrics=[{"name": "latency"}, {"name": "errors"}])
    verdict = judge(policy, seq("sss", "latency"), T0, NOW)
    assert verdict.phase == "running"
    assert "errors: 0/3 measurements judged" in verdict.reason


def test_a_metric_may_set_its_own_limits() -> None:
    policy = canary(metrics=[{"name": "flaky", "failure_limit": 2}])
    assert judge(policy, seq("ffsss", "flaky"), T0, NOW).phase == "successful"
    assert judge(policy, seq("ff", "other") + seq("sss", "flaky"), T0, NOW).phase == "failed"


def test_no_data_by_the_deadline() -> None:
    policy = canary(progress_deadline="10m")
    at_start = judge(policy, [], T0, T0)
    assert at_start.phase == "running" and at_start.deadline == T0 + timedelta(minutes=10)
    late = judge(policy, [], T0, T0 + timedelta(minutes=10))
    assert late.phase == "inconclusive"  # the default no_data
    assert "no measurement for 10m since the analysis started" in late.reason
    assert judge(canary(progress_deadline="10m", no_data="failed"), [], T0, late_now()).phase == (
        "failed"
    )


def late_now() -> datetime:
    return T0 + timedelta(hours=1)


def test_the_deadline_counts_from_the_last_measurement() -> None:
    policy = canary(progress_deadline="10m")
    two = seq("ss")  # the last at T0 + 1s
    assert judge(policy, two, T0, T0 + timedelta(minutes=10)).phase == "running"
    stalled = judge(policy, two, T0, T0 + timedelta(minutes=10, seconds=1))
    assert stalled.phase == "inconclusive" and "since the last one" in stalled.reason


def test_a_decided_run_has_no_deadline() -> None:
    assert judge(canary(), seq("f"), T0, late_now()).deadline is None
    assert judge(canary(), seq("f"), T0, late_now()).phase == "failed"


def test_policy_refuses_a_bad_canary_block() -> None:
    base = "environments:\n  prod: {promote_from: build, canary: %s}\n"
    with pytest.raises(PolicyError, match="no_data"):
        load_policy(base % "{no_data: maybe}")
    with pytest.raises(PolicyError, match="must be unique"):
        load_policy(base % "{metrics: [{name: a}, {name: a}]}")
    with pytest.raises(PolicyError, match="is not allowed"):
        load_policy(base % "{metrics: [{name: a, success_condition: '__import__(\"os\")'}]}")
    ok = load_policy(
        base % "{interval: 5s, metrics: [{name: a, success_condition: 'result[0] < 1'}]}"
    )
    assert ok.environment("prod").canary.interval == timedelta(seconds=5)


# --------------------------------------------------------------------------- properties

phases = st.sampled_from(["successful", "failed", "inconclusive", "error"])
metric_names = st.sampled_from(["latency", "errors", "saturation"])
limits = st.fixed_dictionaries(
    {
        "count": st.integers(1, 5),
        "failure_limit": st.integers(0, 2),
        "inconclusive_limit": st.integers(0, 2),
        "consecutive_error_limit": st.integers(0, 4),
    }
)


@st.composite
def runs(draw: st.DrawFn) -> tuple[Canary, list[Measurement]]:
    policy = canary(**draw(limits))
    pairs = draw(st.lists(st.tuples(metric_names, phases), max_size=25))
    return policy, [
        Measurement(name, phase, T0 + timedelta(seconds=i)) for i, (name, phase) in enumerate(pairs)
    ]


@settings(max_examples=300, deadline=None)
@given(run=runs(), where=st.integers(0, 30), metric=metric_names)
def test_adding_a_failed_measurement_never_makes_a_run_successful(
    run: tuple[Canary, list[Measurement]], where: int, metric: str
) -> None:
    """Judged before the deadline: the verdict is driven by the measurements alone."""
    policy, measured = run
    before = judge(policy, measured, T0, NOW)
    if before.phase not in ("failed", "inconclusive"):
        return
    at = min(where, len(measured))
    failed = Measurement(metric, "failed", T0 + timedelta(seconds=at, milliseconds=500))
    after = judge(policy, [*measured[:at], failed, *measured[at:]], T0, NOW)
    assert after.phase != "successful"
    assert ORDER.index(after.phase) >= ORDER.index("inconclusive")
    if before.phase == "failed":
        assert after.phase == "failed"


@settings(max_examples=300, deadline=None)
@given(run=runs(), data=st.data())
def test_the_verdict_does_not_depend_on_how_metrics_interleave(
    run: tuple[Canary, list[Measurement]], data: st.DataObject
) -> None:
    """Shuffle the measurements, keeping each metric's own order: the same verdict."""
    policy, measured = run
    shuffled = data.draw(st.permutations(measured))
    per_metric: dict[str, list[Measurement]] = {}
    for m in measured:
        per_metric.setdefault(m.metric, []).append(m)
    interleaved = [per_metric[m.metric].pop(0) for m in shuffled]
    a = judge(policy, measured, T0, NOW)
    b = judge(policy, interleaved, T0, NOW)
    assert (a.phase, a.reason) == (b.phase, b.reason)
