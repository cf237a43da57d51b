"""ferry pr ls|show|merge|close: pull requests on the forge."""

from __future__ import annotations

import json
from typing import Any

import typer

from ferry.cli.app import (
    connect_bus,
    echo_json,
    fail,
    load_settings,
    open_forge,
    pr_app,
    print_rows,
)

# --- pr ---------------------------------------------------------------------------------------


def _pr_dict(pr: Any) -> dict[str, Any]:
    return json.loads(pr.model_dump_json())


@pr_app.command("ls")
def pr_ls(
    state: str | None = typer.Option(None, help="open, merged or closed (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List pull requests, newest first."""
    if state not in (None, "open", "merged", "closed"):
        fail(f"--state must be open, merged or closed, got {state!r}")
    prs = open_forge().list_prs(state=state)
    if as_json:
        echo_json([_pr_dict(p) for p in prs])
        return
    if not prs:
        typer.echo("no pull requests")
        return
    rows = [["#", "STATE", "TITLE", "BRANCH"]]
    rows += [[str(p.number), p.state, p.title, p.head] for p in prs]
    print_rows(rows)


def _get_pr(number: int) -> Any:
    from ferry.adapters.forge import PullRequestNotFound

    try:
        return open_forge().get_pr(number)
    except PullRequestNotFound:
        fail(f"no pull request #{number}: `ferry pr ls` lists them")


@pr_app.command("show")
def pr_show(
    number: int = typer.Argument(..., help="Pull request number."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show one pull request: title, state, labels, body and comments."""
    pr = _get_pr(number)
    if as_json:
        echo_json(_pr_dict(pr))
        return
    typer.echo(f"#{pr.number} {pr.title}\nstate: {pr.state}   branch: {pr.head} -> {pr.base}")
    typer.echo(f"labels: {', '.join(pr.labels) or '-'}")
    if pr.merge_commit:
        typer.echo(f"merge commit: {pr.merge_commit}")
    typer.echo("\n" + pr.body)
    for c in pr.comments:
        typer.echo(f"--- {c.author} at {c.at:%Y-%m-%d %H:%M}Z\n{c.body}")


def _report(pr: Any, kind: str, **extra: Any) -> None:
    """Tell the workers about a merge or close made by hand on a promotion PR, as pr-writer
    would (what a forge webhook does for the HTTP forges)."""
    from ferry.adapters.state import PromotionStore
    from ferry.core.events import Change

    if not pr.key:
        return
    try:
        bus = connect_bus(load_settings())
    except Exception:  # noqa: BLE001 - no Ferry running: the forge alone is still usable
        return
    promotion = PromotionStore(bus).get(pr.key)
    if promotion is None:
        return
    change = Change.about(
        kind,
        promotion_id=pr.key,
        service=promotion["service"],
        digest=promotion["digest"],
        env=promotion["target_env"],
        source_env=promotion["source_env"],
        pr=pr.number,
        **extra,
    )
    bus.emit(change)


@pr_app.command("merge")
def pr_merge(number: int = typer.Argument(..., help="Pull request number.")) -> None:
    """Merge a pull request into main (a real git merge)."""
    pr = _get_pr(number)
    if pr.state == "closed":
        fail(f"pull request #{number} is closed: it cannot be merged")
    pr = open_forge().merge_pr(number)
    _report(pr, "pr_merged", merge_commit=pr.merge_commit)
    typer.echo(f"#{pr.number} merged as {pr.merge_commit}")


@pr_app.command("close")
def pr_close(
    number: int = typer.Argument(..., help="Pull request number."),
    comment: str | None = typer.Option(None, help="Say why."),
) -> None:
    """Close a pull request without merging it."""
    pr = _get_pr(number)
    if pr.state == "merged":
        fail(f"pull request #{number} is already merged: revert it with a new promotion")
    pr = open_forge().close_pr(number, comment=comment)
    _report(pr, "pr_closed", reason=comment)
    typer.echo(f"#{pr.number} closed")
