"""ferry dlq and ferry replay: look at what failed, and re-drive it."""

from __future__ import annotations

import json
from typing import Any

import typer

from ferry.cli.app import (
    app,
    check_names,
    connect_bus,
    dlq_app,
    echo_json,
    fail,
    load_settings,
    print_rows,
)

# --- dlq --------------------------------------------------------------------------------------


@dlq_app.command("ls")
def dlq_ls(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List dead letters, oldest first."""
    from ferry.app.replay import dead_letters

    letters = dead_letters(connect_bus(load_settings()))
    if as_json:
        echo_json([{"id": i, **json.loads(e.model_dump_json())} for i, e in letters])
        return
    if not letters:
        typer.echo("no dead letters")
        return
    rows = [["ID", "STREAM", "WORKER", "DELIVERIES", "ERROR"]]
    for i, e in letters:
        rows.append([i, e.stream, e.worker, str(e.deliveries), e.error])
    print_rows(rows)


@dlq_app.command("show")
def dlq_show(
    entry_id: str = typer.Argument(..., help="The dead letter's id (from `ferry dlq ls`)."),
) -> None:
    """Show one dead letter whole: the reason and the original entry."""
    from ferry.app.replay import dead_letters

    [(i, letter)] = dead_letters(connect_bus(load_settings()), [entry_id])
    echo_json({"id": i, **json.loads(letter.model_dump_json())})


def _chosen(ids: list[str] | None, every: bool, verb: str) -> list[str] | None:
    if ids and every:
        fail(f"name the dead letters to {verb} or pass --all, not both")
    if not ids and not every:
        fail(
            f"name the dead letters to {verb} by id (`ferry dlq ls` lists them, e.g. "
            f"`ferry dlq {verb} 1764230400000-0`) or pass --all for every one"
        )
    return None if every else ids


@dlq_app.command("retry")
def dlq_retry(
    ids: list[str] | None = typer.Argument(None, help="Dead letter ids (from `ferry dlq ls`)."),
    every: bool = typer.Option(False, "--all", help="Every dead letter."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Put dead letters back on their streams (after fixing the cause); done effects are skipped."""
    from ferry.app.replay import retry

    done = retry(connect_bus(load_settings()), _chosen(ids, every, "retry"))
    _done("retried", done, as_json)


def _done(verb: str, done: list[Any], as_json: bool) -> None:
    if as_json:
        echo_json({verb: done})
    else:
        typer.echo(f"{verb} {len(done)} dead letter{'s' * (len(done) != 1)}")


@dlq_app.command("drop")
def dlq_drop(
    ids: list[str] | None = typer.Argument(None, help="Dead letter ids (from `ferry dlq ls`)."),
    every: bool = typer.Option(False, "--all", help="Every dead letter."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Delete dead letters for good."""
    from ferry.app.replay import drop

    done = drop(connect_bus(load_settings()), _chosen(ids, every, "drop"))
    _done("dropped", done, as_json)


# --- replay -----------------------------------------------------------------------------------


@app.command("replay")
def replay_cmd(
    stream: str = typer.Argument(..., help="ci, signals, promotions, changes, canary or previews."),
    start: str = typer.Option("-", "--from", help="First entry id or ISO time (default: oldest)."),
    end: str = typer.Option("+", "--to", help="Last entry id or ISO time (default: newest)."),
    service: str | None = typer.Option(None, help="Only entries about this service."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be replayed."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Publish a range of a stream again to re-drive it: done effects are skipped, failed ones
    are done again."""
    from ferry.app.replay import replay, stream_bound, trimmed_before

    check_names(service=service)
    first = start if start == "-" else stream_bound(start, "--from")
    last = end if end == "+" else stream_bound(end, "--to")
    bus = connect_bus(load_settings())
    gone = trimmed_before(bus, stream, first)
    chosen = replay(
        bus,
        stream,
        start=first,
        end=last,
        service=service,
        dry_run=dry_run,
    )
    if gone is not None:
        typer.echo(f"note: part of what you asked for is no longer kept: {gone.sentence}", err=True)
    if as_json:
        echo_json([{"id": c.entry_id, "fields": c.fields} for c in chosen])
        return
    verb = "would replay" if dry_run else "replayed"
    typer.echo(f"{verb} {len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'} of {stream}")
    if dry_run:
        for c in chosen:
            typer.echo(
                f"  {c.entry_id}  {c.fields.get('kind', '?')}  {c.fields.get('service', '')}"
            )
