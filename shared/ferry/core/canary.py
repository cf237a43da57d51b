"""The canary judge: measurements in, a verdict out (pure: takes now).

Semantics of Argo Rollouts' AnalysisRun. Each measurement of a metric is successful, failed,
inconclusive or error. A metric
- fails when its failed measurements exceed `failure_limit`;
- is inconclusive when its inconclusive measurements exceed `inconclusive_limit`;
- errors when its consecutive errors exceed `consecutive_error_limit` (any other measurement
  resets the streak);
- succeeds once `count` measurements that are not errors have been judged;
- is running otherwise.
The run's phase is the worst of its metrics' (successful < running < inconclusive < error <
failed), so one failed metric decides at once, and the run succeeds only when every metric has.
A run that sees no measurement for `progress_deadline` (since it started, or since the last
measurement) ends with the policy's `no_data` phase.

A metric is judged over all its measurements, not only up to the first decisive one: a failure
that arrives after a metric reached its count still fails it while the run is undecided. That is
what makes the verdict monotone (a failed measurement never helps) and independent of how
different metrics' measurements interleave.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from ferry.core.conditions import MeasurementPhase
from ferry.core.policy import Canary, CanaryMetric
from ferry.core.windows import human

Phase = Literal["successful", "running", "inconclusive", "error", "failed"]
# Worst last: the run takes the worst phase of its metrics.
ORDER: tuple[Phase, ...] = ("successful", "running", "inconclusive", "error", "failed")
DECIDED: frozenset[str] = frozenset({"successful", "inconclusive", "error", "failed"})


@dataclass(frozen=True)
class Measurement:
    metric: str
    phase: MeasurementPhase
    at: datetime
    value: str | None = None
    event_id: str = ""


@dataclass(frozen=True)
class Limits:
    count: int
    failure_limit: int
    inconclusive_limit: int
    consecutive_error_limit: int

    @classmethod
    def of(cls, canary: Canary, metric: CanaryMetric | None) -> Limits:
        """The canary block's limits, with the metric's own where it sets them."""

        def pick(name: str) -> int:
            own = getattr(metric, name, None) if metric is not None else None
            return int(own if own is not None else getattr(canary, name))

        return cls(
            pick("count"),
            pick("failure_limit"),
            pick("inconclusive_limit"),
            pick("consecutive_error_limit"),
        )


@dataclass(frozen=True)
class MetricVerdict:
    metric: str
    phase: Phase
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_errors: int = 0  # the longest streak seen
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    phase: Phase
    reason: str
    metrics: tuple[MetricVerdict, ...] = ()
    # When the run gives up waiting for data (None once it is decided).
    deadline: datetime | None = None
    # The failed (or erroring) measurements, for the audit record of a rollback.
    blamed: tuple[Measurement, ...] = field(default_factory=tuple)

    @property
    def decided(self) -> bool:
        return self.phase in DECIDED


def worst(phases: Iterable[Phase]) -> Phase:
    return max(phases, key=ORDER.index, default="successful")


def judge_metric(name: str, limits: Limits, measurements: Sequence[Measurement]) -> MetricVerdict:
    """One metric's phase from its measurements, in the order they arrived."""
    counts = {"successful": 0, "failed": 0, "inconclusive": 0, "error": 0}
    streak = longest = 0
    for m in measurements:
        counts[m.phase] += 1
        streak = streak + 1 if m.phase == "error" else 0
        longest = max(longest, streak)
    judged = counts["successful"] + counts["failed"] + counts["inconclusive"]
    tally = (
        f"{counts['successful']} successful, {counts['failed']} failed, "
        f"{counts['inconclusive']} inconclusive, {counts['error']} errors"
    )
    phase: Phase
    if counts["failed"] > limits.failure_limit:
        phase = "failed"
        why = f"{counts['failed']} failed measurements, limit {limits.failure_limit}"
    elif counts["inconclusive"] > limits.inconclusive_limit:
        phase = "inconclusive"
        why = f"{counts['inconclusive']} inconclusive, limit {limits.inconclusive_limit}"
    elif longest > limits.consecutive_error_limit:
        phase = "error"
        why = f"{longest} errors in a row, limit {limits.consecutive_error_limit}"
    elif judged >= limits.count:
        phase = "successful"
        why = f"{judged}/{limits.count} measurements judged"
    else:
        phase = "running"
        why = f"{judged}/{limits.count} measurements judged"
    return MetricVerdict(
        metric=name,
        phase=phase,
        successful=counts["successful"],
        failed=counts["failed"],
        inconclusive=counts["inconclusive"],
        errors=counts["error"],
        consecutive_errors=longest,
        reason=f"{name}: {why} ({tally})",
    )


def judge(
    canary: Canary, measurements: Sequence[Measurement], started_at: datetime, now: datetime
) -> Verdict:
    """The verdict on one canary analysis: MEASUREMENTS in the order they arrived, the run
    STARTED_AT, judged at NOW."""
    by_metric: dict[str, list[Measurement]] = {m.name: [] for m in canary.metrics}
    for m in measurements:
        by_metric.setdefault(m.metric, []).append(m)
    declared = {m.name: m for m in canary.metrics}
    metrics = tuple(
        judge_metric(name, Limits.of(canary, declared.get(name)), ms)
        for name, ms in sorted(by_metric.items())
    )
    phase = worst(v.phase for v in metrics) if metrics else "running"
    if phase != "running":
        deciding = [v for v in metrics if v.phase == phase]
        blamed = tuple(
            m
            for m in measurements
            if phase in ("failed", "error")
            and m.metric in {v.metric for v in deciding}
            and m.phase == ("failed" if phase == "failed" else "error")
        )
        return Verdict(
            phase, "; ".join(v.reason for v in deciding), metrics, deadline=None, blamed=blamed
        )
    last = max((m.at for m in measurements), default=started_at)
    deadline = max(last, started_at) + canary.progress_deadline
    if now >= deadline:
        since = "since the last one" if measurements else "since the analysis started"
        reason = (
            f"no data: no measurement for {human(canary.progress_deadline)} {since} "
            f"(progress_deadline); no_data is {canary.no_data}"
        )
        return Verdict(canary.no_data, reason, metrics, deadline=None)
    running = [v.reason for v in metrics if v.phase == "running"]
    reason = "; ".join(running) if running else "waiting for the first measurement"
    return Verdict("running", reason, metrics, deadline=deadline)
