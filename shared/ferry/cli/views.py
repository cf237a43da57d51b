"""ferry status, manifest, explain and audit: where things stand and why."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import typer

from ferry.app.reports import (
    audit_records,
    platform_manifest,
    short_subject,
)
from ferry.cli.app import (
    app,
    check_names,
    connect_bus,
    echo_json,
    end_now,
    load_settings,
    open_forge,
    open_repo,
    print_rows,
    short,
)

# --- status -----------------------------------------------------------------------------------


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    only_pending: bool = typer.Option(
        False, "--pending", help="Only what is open or waits: unmet gates, and who can move it."
    ),
) -> None:
    """Service x environment: the digest pinned on main, and what moves or waits and why (the
    decision `ferry explain` shows)."""
    from ferry.app.reports import uncollected

    with uncollected():  # until the answer is printed (and, as a program, the process ends)
        _status(as_json, only_pending)


def _status(as_json: bool, only_pending: bool) -> None:
    from ferry.app.canary import describe
    from ferry.app.reports import status as gather_status

    settings = load_settings()
    if only_pending:
        _pending(settings, as_json)
        return
    found = gather_status(settings)
    table, decided, watched = found.table, found.decided, found.watched
    if as_json:
        echo_json({"services": table, "decisions": decided, "canaries": watched})
        end_now()
        return
    envs = list(next(iter(table.values())).keys()) if table else []
    rows = [["SERVICE", *[e.upper() for e in envs]]]
    for service, pins in table.items():
        rows.append([service, *[short(pins[e]) for e in envs]])
    print_rows(rows)
    moving = [
        [service, env, d["state"], (d["reasons"] or [""])[0]]
        for service, by_env in decided.items()
        for env, d in by_env.items()
        if d["state"] not in ("up to date", "nothing to promote")
    ]
    if moving:
        typer.echo("")
        print_rows([["SERVICE", "ENV", "STATE", "WHY"], *moving])
    for service, by_env in watched.items():
        for env, state in by_env.items():
            typer.echo(f"canary {service} in {env}: {describe(state)}")
    end_now()


def _pending(settings: Any, as_json: bool) -> None:
    from ferry.app.reports import pending

    found = pending(settings)
    if as_json:
        echo_json(found)
        end_now()
        return
    if not found:
        typer.echo("nothing is open or waiting")
        return
    lines = []  # one write: a line or more per promotion that waits (tens of thousands)
    for p in found:
        pr = f" #{p['pull_request']}" if p["pull_request"] else ""
        lines.append(f"{p['service']} -> {p['env']} {short(p['digest'])}{pr}: {p['state']}")
        for g in p["unmet"]:
            lines.append(f"  {g['gate']:<9} {g['status']:<8} {g['reason']}")
            lines.append(f"  {'':<9} {'':<8} moved by {g['who']}")
        if p["who"]:
            lines.append(f"  moved by {p['who']}")
    typer.echo("\n".join(lines))
    end_now()


# --- manifest ---------------------------------------------------------------------------------


@app.command()
def manifest(
    env: str = typer.Argument(..., help="Environment name."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The platform version of ENV: its services' digests and a hash that names the set."""
    check_names(environment=env)
    found = platform_manifest(load_settings(), env)
    if as_json:
        echo_json(found)
        return
    typer.echo(f"{env} {found['version']}  (main {found['commit'][:12]})")
    for service, digest in sorted(found["services"].items()):
        typer.echo(f"  {service}={digest}")


# --- explain ----------------------------------------------------------------------------------


@app.command()
def explain(
    service: str = typer.Argument(..., help="Service name."),
    env: str = typer.Argument(..., help="Environment name."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Where SERVICE stands in ENV and why: what is pinned, what comes next, each gate."""
    from ferry.app.explain import explain as gather
    from ferry.app.explain import render

    check_names(service=service, environment=env)
    settings = load_settings()
    try:
        forge = open_forge()
    except Exception:  # noqa: BLE001 - explaining does not need the forge; leave PRs out
        forge = None
    found = gather(open_repo(settings), connect_bus(settings), forge, service, env)
    if as_json:
        echo_json(found.as_dict())
        return
    for line in render(found):
        typer.echo(line)


# --- audit ------------------------------------------------------------------------------------


@app.command()
def audit(
    service: str | None = typer.Option(None, help="Only decisions about this service."),
    limit: int = typer.Option(20, min=1, help="How many of the newest decisions."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Why digests moved or did not: the newest decisions of every worker, in words."""
    check_names(service=service)
    records = audit_records(load_settings(), service, limit)
    if as_json:
        echo_json([json.loads(r.model_dump_json()) for r in records])
        return
    if not records:
        typer.echo("no decisions recorded")
        return
    rows = [["WHEN (UTC)", "WORKER", "SUBJECT", "OUTCOME", "REASON"]]
    for r in records:
        # One gate per line: a decision's reason lists its gates with "; ".
        first, *more = r.reason.split("; ")
        when = f"{r.occurred_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}"
        rows.append([when, r.worker, short_subject(r.subject), r.outcome, first])
        rows += [["", "", "", "", line] for line in more]
    print_rows(rows)
