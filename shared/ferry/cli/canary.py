"""ferry publish canary, ferry canary promote|abort: measurements for the canary-watcher, and a
person's word on a paused canary."""

from __future__ import annotations

import typer

from ferry.cli.app import (
    app,
    check_names,
    connect_bus,
    fail,
    load_settings,
    open_repo,
    parsed,
    publish_app,
    published,
)

canary_app = typer.Typer(
    help="Decide a paused (inconclusive) canary: promote it, or abort and roll back.",
    no_args_is_help=True,
)
app.add_typer(canary_app, name="canary")


@publish_app.command("canary")
def publish_canary(
    service: str = typer.Option(..., help="Service name."),
    digest: str = typer.Option(..., help="The canary's digest: sha256:<64 hex>."),
    env: str = typer.Option(..., help="Environment the canary runs in."),
    metric: str = typer.Option(..., help="Metric name (e.g. error-rate)."),
    phase: str = typer.Option(..., help="successful, failed, inconclusive or error."),
    value: str | None = typer.Option(None, help="The measured value, as evidence."),
    event_id: str | None = typer.Option(None, help="Idempotency key (default: random)."),
) -> None:
    """Publish one measurement of a canary metric (for any job that measures)."""
    fields = {
        "kind": "measurement",
        "service": service,
        "digest": digest,
        "env": env,
        "metric": metric,
        "phase": phase,
        "value": value,
        "event_id": event_id,
    }
    _publish(fields)


def _publish(fields: dict[str, str | None]) -> None:
    event = parsed("canary", fields)
    published(event, f"published {event.kind} {event.event_id}")


def _decide(kind: str, service: str, env: str, actor: str, reason: str | None) -> None:
    from ferry.adapters.canary_state import CanaryStore
    from ferry.core.rollback import approvers_of

    check_names(service=service, environment=env, actor=actor)
    settings = load_settings()
    policy = open_repo(settings).policy()
    env_policy = policy.environment(env, service)
    a = CanaryStore(connect_bus(settings)).get(service, env)
    if a is None or not a.open:
        state = "no analysis ran" if a is None else f"{a.digest[:19]} is {a.phase}"
        fail(f"no canary of {service} in {env} is running or paused ({state}): nothing to {kind}")
    allowed = approvers_of(env_policy, dict(policy.approvers.teams))
    if allowed and actor not in allowed:
        fail(f"{actor} is not an approver of {env} ({', '.join(sorted(allowed))})")
    fields = {"kind": kind, "service": service, "env": env, "digest": a.digest}
    _publish({**fields, "actor": actor, "reason": reason})


@canary_app.command("promote")
def promote(
    service: str = typer.Argument(..., help="Service name."),
    env: str = typer.Argument(..., help="Environment."),
    actor: str = typer.Option(..., "--as", help="Who decides (an approver of ENV)."),
    reason: str | None = typer.Option(None, help="Why: goes into the audit."),
) -> None:
    """The paused canary is good: verify its digest."""
    _decide("promote", service, env, actor, reason)


@canary_app.command("abort")
def abort(
    service: str = typer.Argument(..., help="Service name."),
    env: str = typer.Argument(..., help="Environment."),
    actor: str = typer.Option(..., "--as", help="Who decides (an approver of ENV)."),
    reason: str | None = typer.Option(None, help="Why: goes into the audit and the rollback PR."),
) -> None:
    """The canary is bad: roll it back to the last verified digest (or the one before it)."""
    _decide("abort", service, env, actor, reason)
