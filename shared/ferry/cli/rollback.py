"""ferry rollback: pin again a digest that ran in an environment before."""

from __future__ import annotations

import typer

from ferry.cli.app import app, connect_bus, echo_json, load_settings, open_repo, short


@app.command()
def rollback(
    service: str = typer.Argument(..., help="Service name."),
    env: str = typer.Argument(..., help="Environment to roll back."),
    to: str | None = typer.Option(
        None, "--to", help="Digest to pin (default: the one pinned before the current one)."
    ),
    actor: str = typer.Option(..., "--as", help="Who asks for the rollback (audited)."),
    reason: str | None = typer.Option(None, help="Why: goes into the PR and the audit."),
    force: bool = typer.Option(
        False, "--force", help="Roll back during a deny window (listed approvers only)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the published command as JSON."),
) -> None:
    """Roll SERVICE in ENV back: pr-writer opens a PR labelled `rollback` and merges it at once
    (no approval, no soak: the digest ran there before)."""
    from ferry.app.rollback import request_rollback

    settings = load_settings()
    command = request_rollback(
        open_repo(settings),
        service=service,
        env=env,
        to=to,
        actor=actor,
        reason=reason,
        force=force,
    )
    entry = connect_bus(settings).publish(command)
    if as_json:
        echo_json({"entry_id": entry, "command": command.to_fields()})
        return
    typer.echo(
        f"rollback requested: {service} in {env} {short(command.rollback_of)} -> "
        f"{short(command.digest)} (promotion {command.promotion_id})"
    )
