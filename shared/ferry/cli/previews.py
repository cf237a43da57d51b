"""ferry publish preview, ferry previews ls|extend|reap: per-PR preview environments."""

from __future__ import annotations

from datetime import datetime, timedelta

import typer

from ferry.cli.app import (
    app,
    check_names,
    echo_json,
    fail,
    load_settings,
    parsed,
    print_rows,
    publish_app,
    published,
)

previews_app = typer.Typer(
    help="Preview environments: their TTLs, quotas and what preview-reaper did.",
    no_args_is_help=True,
)
app.add_typer(previews_app, name="previews")

KINDS = ("opened", "updated", "labeled", "unlabeled", "closed", "extend")


@publish_app.command("preview")
def publish_preview(
    repo: str = typer.Option(..., help="The application repository, OWNER/NAME."),
    pr: int = typer.Option(..., help="The pull request's number."),
    event: str = typer.Option(..., "--event", help="|".join(KINDS)),
    team: str | None = typer.Option(None, help="The team the preview counts against."),
    labels: str | None = typer.Option(
        None, help="Comma-separated: the PR's labels (opened, updated), added or removed ones."
    ),
    until: str | None = typer.Option(None, help="An absolute end for the preview (ISO 8601)."),
    event_id: str | None = typer.Option(None, help="Idempotency key (default: random)."),
    as_json: bool = typer.Option(False, "--json", help="Print the published entry as JSON."),
) -> None:
    """Publish what happened to an application pull request (for scripts and CI jobs)."""

    if event not in KINDS:
        fail(f"--event must be one of {', '.join(KINDS)}, got {event!r}")
    fields = {
        "kind": event,
        "repo": repo,
        "pr": str(pr),
        "team": team,
        "until": until,
        "event_id": event_id,
    }
    if labels is not None:
        import json

        fields["labels"] = json.dumps([x.strip() for x in labels.split(",") if x.strip()])
    preview = parsed("previews", fields)
    published(preview, f"published {event} {preview.event_id}", as_json=as_json)


@previews_app.command("ls")
def previews_ls(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    every: bool = typer.Option(False, "--all", help="Also PRs that are no preview (yet)."),
) -> None:
    """Every preview: its state, why, and when the reaper looks at it next."""
    from ferry.app.previews import previews

    found = [v for v in previews(load_settings()) if every or v.status.state not in ("unknown",)]
    if as_json:
        echo_json([v.as_json() for v in found])
        return
    if not found:
        typer.echo("no previews")
        return
    rows = [["PREVIEW", "TEAM", "STATE", "DUE", "REASON", "FORGE"]]
    for v in found:
        data = v.as_json()
        forge = [f"{len(data['forge_log'])} recorded"] if data["forge_log"] else []
        if data["pending"]:
            last = data["pending"][0]
            forge.append(
                f"{len(data['pending'])} pending" + (f" ({last['error']})" if last["error"] else "")
            )
        state = v.status.state + (" (dry run)" if data["dry_run"] else "")
        due = (data["due"] or "-")[:19]
        rows.append(
            [v.key, v.status.team or "-", state, due, v.status.reason, ", ".join(forge) or "-"]
        )
    print_rows(rows)


@previews_app.command("extend")
def previews_extend(
    preview: str = typer.Argument(..., help="OWNER/NAME#PR, as `ferry previews ls` names it."),
    until: str | None = typer.Option(None, help="The new end (ISO 8601)."),
    by: str | None = typer.Option(
        None, "--for", help="A duration from now (e.g. 4h); default: one TTL."
    ),
    actor: str | None = typer.Option(None, "--as", help="Who asks."),
) -> None:
    """Keep a preview longer (never beyond max_ttl after it started)."""
    from ferry.app.previews import request
    from ferry.core.events import now_utc
    from ferry.core.policy import parse_duration

    check_names(actor=actor)
    if until is not None and by is not None:
        fail("give --until or --for, not both")
    end: datetime | None = None
    try:
        if until is not None:
            end = datetime.fromisoformat(until)
        elif by is not None:
            end = now_utc() + parse_duration(by)
    except ValueError as e:
        fail(f"--until must be an ISO 8601 time, --for a duration: {e}")
    if end is not None and end.tzinfo is None:
        end = end.replace(tzinfo=now_utc().tzinfo)
    if end is not None and end <= now_utc() + timedelta(seconds=1):
        fail(f"the new end {end.isoformat()} is not in the future")
    event, outcome = request(load_settings(), preview, "extend", until=end, actor=actor)
    typer.echo(f"asked to extend {event.subject}: {outcome}")


@previews_app.command("reap")
def previews_reap(
    preview: str = typer.Argument(..., help="OWNER/NAME#PR, as `ferry previews ls` names it."),
    reason: str = typer.Option(..., help="Why: the comment on the pull request says it."),
    actor: str | None = typer.Option(None, "--as", help="Who asks."),
) -> None:
    """Reap a preview now: preview-reaper removes its label and comments why."""
    from ferry.app.previews import request

    check_names(actor=actor)
    event, outcome = request(load_settings(), preview, "reap", actor=actor, reason=reason)
    typer.echo(f"asked to reap {event.subject}: {outcome}")
