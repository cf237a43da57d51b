"""ferry pr ls|show|merge|close: pull requests on the forge."""

from __future__ import annotations

import json
from typing import Any

import typer

from ferry.cli.app import (
    check_names,
    connect_bus,
    echo_json,
    fail,
    load_settings,
    open_forge,
    open_repo,
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


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a bare container): say so in the record
        return "unknown"


def _promotion(pr: Any) -> tuple[Any, dict[str, str] | None]:
    """The bus and what Ferry knows of the promotion PR stands for (None: not a promotion Ferry
    follows, or no Ferry running)."""
    from ferry.adapters.state import PromotionStore
    from ferry.core.events import promotion_of_key

    if not pr.key:
        return None, None
    try:
        bus = connect_bus(load_settings())
        return bus, PromotionStore(bus).get(promotion_of_key(pr.key))
    except Exception:  # noqa: BLE001 - no Ferry running: the forge alone is still usable
        return None, None


def _report(bus: Any, promotion: dict[str, str] | None, pr: Any, kind: str, **extra: Any) -> None:
    """Tell the workers about a merge or close made by hand on a promotion PR, as pr-writer
    would (what a forge webhook does for the HTTP forges), and put who did it on the record."""
    from ferry.core.events import Change, promotion_of_key

    if bus is None or promotion is None:
        return
    change = Change.about(
        kind,
        promotion_id=promotion_of_key(pr.key),
        service=promotion["service"],
        digest=promotion["digest"],
        env=promotion["target_env"],
        source_env=promotion["source_env"],
        pr=pr.number,
        **extra,
    )
    bus.emit(change)


def _audit(bus: Any, promotion: dict[str, str] | None, action: str, outcome: str, why: str) -> None:
    if bus is None or promotion is None:
        return
    subject = f"{promotion['service']}@{promotion['digest']} -> {promotion['target_env']}"
    bus.audit("cli", action, subject, outcome, why)


def _done(as_json: bool, pr: Any, line: str, **extra: Any) -> None:
    if as_json:
        echo_json({**_pr_dict(pr), **extra})
    else:
        typer.echo(line)


@pr_app.command("merge")
def pr_merge(
    number: int = typer.Argument(..., help="Pull request number."),
    actor: str | None = typer.Option(None, "--as", help="Who merges (default: your login name)."),
    force: bool = typer.Option(
        False, "--force", help="Merge although a gate failed or waits (listed approvers only)."
    ),
    reason: str | None = typer.Option(None, help="Why (required with --force): audited."),
    as_json: bool = typer.Option(False, "--json", help="Print the merged pull request as JSON."),
) -> None:
    """Merge a pull request into main (a real git merge). A promotion's pull request merges only
    when its gates pass, as `ferry explain` shows; --force lets a listed approver override."""
    from datetime import UTC, datetime

    from ferry.app.people import check_merge

    check_names(actor=actor)
    if force and (actor is None or not (reason or "").strip()):
        fail("--force needs --as USER and --reason WHY (e.g. --force --as lead --reason hotfix)")
    who = actor or _login()
    pr = _get_pr(number)
    if pr.state == "closed":
        fail(f"pull request #{number} is closed: it cannot be merged")
    bus, promotion = _promotion(pr)
    forced = False
    if pr.state == "open" and promotion is None and (pr.key or "").startswith("p-"):
        if not force:
            fail(
                f"cannot check the gates of #{number}: Ferry has no record of its promotion "
                "(is FERRY_REDIS_URL right, is `ferry up` running?); a listed approver may merge "
                "it anyway with --force --as USER --reason WHY"
            )
        forced = True
    if pr.state == "open" and promotion is not None:
        main = open_repo(load_settings()).at_main()
        now = datetime.now(UTC)
        forced = check_merge(bus, main, promotion, number, actor=who, force=force, now=now).forced
    if pr.state == "open":
        pr = open_forge().merge_pr(number)
        why = f"PR #{number} merged by {who}" + (f": {reason}" if reason else "")
        if forced:
            why = f"PR #{number} merged by {who} overriding unmet gates: {reason}"
        _audit(bus, promotion, "merge_pr", "forced" if forced else "merged", why)
    _report(bus, promotion, pr, "pr_merged", merge_commit=pr.merge_commit, actor=who, reason=reason)
    _done(as_json, pr, f"#{pr.number} merged as {pr.merge_commit}", forced=forced)


@pr_app.command("close")
def pr_close(
    number: int = typer.Argument(..., help="Pull request number."),
    comment: str | None = typer.Option(None, "--comment", "--reason", help="Say why."),
    actor: str | None = typer.Option(None, "--as", help="Who closes (default: your login name)."),
    as_json: bool = typer.Option(False, "--json", help="Print the closed pull request as JSON."),
) -> None:
    """Close a pull request without merging it (`ferry promote` asks for its digest again)."""
    check_names(actor=actor)
    who = actor or _login()
    pr = _get_pr(number)
    if pr.state == "merged":
        fail(f"pull request #{number} is already merged: revert it with a new promotion")
    bus, promotion = _promotion(pr)
    if pr.state == "open":
        pr = open_forge().close_pr(number, comment=comment)
        why = f"PR #{number} closed by {who}" + (f": {comment}" if comment else "")
        _audit(bus, promotion, "close_pr", "closed", why)
    _report(bus, promotion, pr, "pr_closed", reason=comment, actor=who)
    _done(as_json, pr, f"#{pr.number} closed")
