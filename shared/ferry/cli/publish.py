"""ferry publish ci|check, ferry approve|reject: events people and jobs send."""

from __future__ import annotations

import typer

from ferry.cli.app import (
    app,
    connect_bus,
    echo_json,
    fail,
    given,
    load_settings,
    publish_app,
)

# --- publish ----------------------------------------------------------------------------------


@publish_app.command("ci")
def publish_ci(
    service: str = typer.Option(..., help="Service name (a DNS label)."),
    digest: str = typer.Option(..., help="Image digest: sha256:<64 hex>."),
    image: str | None = typer.Option(None, help="Image repository, without tag or digest."),
    commit: str | None = typer.Option(None, help="Source commit the image was built from."),
    author: str | None = typer.Option(None, help="Who triggered the build."),
    env: str | None = typer.Option(None, help="Environment the checks ran in (absent: the build)."),
    check: str | None = typer.Option(None, help="Name of the check (e.g. integration)."),
    status: str = typer.Option("success", help="success or failure."),
    built_at: str | None = typer.Option(None, help="When the image was built (ISO 8601)."),
    url: str | None = typer.Option(None, help="Link to the CI run."),
    event_id: str | None = typer.Option(None, help="Idempotency key (default: random)."),
    as_json: bool = typer.Option(False, "--json", help="Print the published entry as JSON."),
) -> None:
    """Publish a CI result: a build (no --env) or checks run against a digest in --env."""
    from ferry.core.events import CiResult, InvalidEvent, parse

    fields = {
        "kind": "ci",
        "service": service,
        "digest": digest,
        "image": image,
        "commit": commit,
        "author": author,
        "env": env,
        "check": check,
        "status": status,
        "built_at": built_at,
        "url": url,
        "event_id": event_id,
    }
    try:
        event = parse("ci", given(fields))
    except InvalidEvent as e:
        fail(str(e))
    assert isinstance(event, CiResult)
    entry = connect_bus(load_settings()).publish(event)
    if as_json:
        echo_json({"entry_id": entry, "event": event.to_fields()})
    else:
        typer.echo(f"published {event.event_id} as {entry}")


@publish_app.command("check")
def publish_check(
    service: str = typer.Option(..., help="Service name."),
    digest: str = typer.Option(..., help="Image digest: sha256:<64 hex>."),
    env: str = typer.Option(..., help="Environment the check ran against."),
    check: str = typer.Option(..., help="Name of the check (e.g. load-test)."),
    status: str = typer.Option("success", help="success or failure."),
    reason: str | None = typer.Option(None, help="A word on the result."),
) -> None:
    """Publish a check result (a job's, e.g. a load test) for a digest live in --env."""
    _publish_signal(
        kind="check",
        service=service,
        digest=digest,
        env=env,
        check=check,
        status=status,
        reason=reason,
    )


def _publish_signal(**fields: str | None) -> None:
    from ferry.core.events import InvalidEvent, parse

    try:
        event = parse("signals", given(fields))
    except InvalidEvent as e:
        fail(str(e))
    entry = connect_bus(load_settings()).publish(event)
    typer.echo(f"published {event.kind} {event.event_id} as {entry}")


@app.command()
def approve(
    service: str = typer.Argument(..., help="Service name."),
    digest: str = typer.Argument(..., help="The digest to approve (sha256:<64 hex>)."),
    env: str = typer.Option(..., help="The environment it may go to."),
    actor: str = typer.Option(..., "--as", help="Who approves (must be an approver)."),
    reason: str | None = typer.Option(None, help="Why."),
) -> None:
    """Approve a digest for an environment whose policy asks for approvals."""
    _publish_signal(
        kind="approval", service=service, digest=digest, env=env, actor=actor, reason=reason
    )


@app.command()
def reject(
    service: str = typer.Argument(..., help="Service name."),
    digest: str = typer.Argument(..., help="The digest to reject (sha256:<64 hex>)."),
    env: str = typer.Option(..., help="The environment it must not go to."),
    actor: str = typer.Option(..., "--as", help="Who rejects (must be an approver)."),
    reason: str = typer.Option(..., help="Why: shown to everyone who asks."),
) -> None:
    """Reject a digest for an environment: it does not move there while the rejection stands."""
    _publish_signal(
        kind="rejection", service=service, digest=digest, env=env, actor=actor, reason=reason
    )
