"""The built-in Prometheus provider: each canary metric with a `prometheus` block has its PromQL
query run every `interval` while the analysis runs, and the result, judged by the metric's
success and failure conditions as Argo Rollouts' Prometheus provider does, is published as one
measurement on ferry:canary. A query that fails (server away, bad PromQL, an empty result the
conditions cannot index) is an `error` measurement, never a crash."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from canary_watcher import analysis
from ferry.adapters.canary_state import Analysis, CanaryStore
from ferry.core.conditions import ConditionError, MeasurementPhase, assess
from ferry.core.events import CanaryMeasurement
from ferry.runtime.logging import scrub_text
from ferry.runtime.worker import WorkerContext

TIMEOUT_S = 10.0


class QueryError(RuntimeError):
    """The query did not give a result the conditions can judge."""


def query(address: str, promql: str) -> Any:
    """Run PROMQL at ADDRESS (an instant query): a number for a scalar, a list of numbers (one
    per series) for a vector."""
    try:
        response = httpx.get(
            f"{address.rstrip('/')}/api/v1/query", params={"query": promql}, timeout=TIMEOUT_S
        )
        body = response.json()
    except (httpx.HTTPError, ValueError) as e:
        raise QueryError(f"{type(e).__name__}: {e}") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        raise QueryError(f"HTTP {response.status_code}: {error or 'no result'}")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar":
            return float(result[1])  # type: ignore[index]
        if kind == "vector":
            return [float(sample["value"][1]) for sample in result]  # type: ignore[union-attr]
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise QueryError(f"malformed {kind} result: {e}") from None
    raise QueryError(f"result type {kind!r} cannot be judged: query an instant vector or scalar")


def judge_query(
    address: str, promql: str, success: str | None, failure: str | None
) -> tuple[MeasurementPhase, str]:
    """(phase, value as text) of one run of the query."""
    try:
        result = query(address, promql)
        return assess(result, success, failure), _text(result)
    except (QueryError, ConditionError) as e:
        return "error", scrub_text(str(e))[:500]


def measure(ctx: WorkerContext, a: Analysis, name: str) -> None:
    """Run metric NAME's query for analysis A, publish the measurement, and set the next run."""
    canary = analysis.canary_policy(ctx, a)
    metric = next((m for m in canary.metrics if m.name == name and m.prometheus), None)
    if metric is None or metric.prometheus is None:
        return  # no longer in ferry.yaml
    address = metric.prometheus.address or ctx.settings.prometheus_url
    promql = (
        metric.prometheus.query.replace("{{service}}", a.service)
        .replace("{{env}}", a.env)
        .replace("{{digest}}", a.digest)
    )
    phase: MeasurementPhase
    if address is None:
        phase, value = (
            "error",
            "no Prometheus address: set FERRY_PROMETHEUS_URL or prometheus.address",
        )
    else:
        phase, value = judge_query(
            address, promql, metric.success_condition, metric.failure_condition
        )
    n = CanaryStore(ctx.bus).next_query(a, name)
    ctx.bus.publish(
        CanaryMeasurement(
            event_id=f"prometheus:{a.id}:{name}:{n}",
            service=a.service,
            digest=a.digest,
            env=a.env,
            metric=name,
            phase=phase,
            value=value,
        )
    )
    current = CanaryStore(ctx.bus).get(a.service, a.env)
    if current is not None and current.id == a.id and current.phase == "running":
        analysis.due(ctx).set(
            analysis.query_member(a, name), datetime.now(UTC) + (metric.interval or canary.interval)
        )


def _text(result: Any) -> str:
    return (repr(result) if isinstance(result, list) else str(result))[:500]
