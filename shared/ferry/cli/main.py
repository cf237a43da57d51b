"""The `ferry` command: the interface people and scripts rely on (DESIGN.md §8)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer

from ferry.runtime.settings import Settings

app = typer.Typer(
    help="Ferry promotes container image digests dev -> staging -> prod by pull request.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
publish_app = typer.Typer(help="Publish an event to Ferry's streams.", no_args_is_help=True)
dlq_app = typer.Typer(
    help="Inspect dead letters: entries a worker could not process.", no_args_is_help=True
)
pr_app = typer.Typer(help="Pull requests on the local forge.", no_args_is_help=True)
app.add_typer(publish_app, name="publish")
app.add_typer(dlq_app, name="dlq")
app.add_typer(pr_app, name="pr")


class CliError(Exception):
    """A mistake the user can fix: printed as one line, exit code 2."""


def fail(message: str) -> NoReturn:
    raise CliError(message)


def _settings() -> Settings:
    return Settings()


def _bus(settings: Settings):  # noqa: ANN202
    from ferry.adapters.bus import Bus
    from ferry.adapters.embedded import resolve_url

    return Bus(settings, resolve_url(settings))


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


# --- init -------------------------------------------------------------------------------------


@app.command()
def init(
    path: Path = typer.Argument(..., help="Where to create the GitOps repository."),
    services: str = typer.Option("api,web", help="Comma-separated service names."),
) -> None:
    """Scaffold a GitOps repository (ferry.yaml, envs/, an Argo CD ApplicationSet)."""
    from ferry.adapters.scaffold import parse_services, scaffold

    if not services.replace(",", "").strip():
        fail("--services needs at least one name, e.g. --services api,web")
    names = parse_services(services)
    scaffold(path, names)
    typer.echo(f"GitOps repository ready at {path} (services: {', '.join(names)})")
    typer.echo(f"use it with: export FERRY_GITOPS_REPO={path.resolve()}")


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
        event = parse("ci", {k: v for k, v in fields.items() if v is not None})
    except InvalidEvent as e:
        fail(str(e))
    assert isinstance(event, CiResult)
    entry = _bus(_settings()).publish(event)
    if as_json:
        _echo_json({"entry_id": entry, "event": event.to_fields()})
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
        event = parse("signals", {k: v for k, v in fields.items() if v is not None})
    except InvalidEvent as e:
        fail(str(e))
    entry = _bus(_settings()).publish(event)
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


# --- workers ----------------------------------------------------------------------------------


@app.command()
def worker(
    name: str = typer.Argument(
        ..., help="gate-evaluator, pr-writer, canary-watcher or preview-reaper"
    ),
) -> None:
    """Run one replica of a worker (run more processes to scale it)."""
    from ferry.runtime.resources import gitops_remote
    from ferry.runtime.runner import load_worker, run_worker

    try:
        spec = load_worker(name)
    except ValueError as e:
        fail(str(e))
    settings = _settings()
    if spec.handlers:
        gitops_remote(settings)  # say what is missing before anything starts
    run_worker(name, settings)


@app.command()
def up() -> None:
    """Run all four workers, each its own process (embedded server if FERRY_REDIS_URL is unset)."""
    from ferry.runtime.resources import gitops_remote
    from ferry.runtime.runner import run_up

    settings = _settings()
    gitops_remote(settings)
    run_up(settings)


# --- status -----------------------------------------------------------------------------------


def _repo(settings: Settings):  # noqa: ANN202
    from ferry.adapters.gitops import GitOpsRepo
    from ferry.runtime.resources import gitops_remote

    return GitOpsRepo(remote=gitops_remote(settings), workdir=settings.home / "work" / "cli")


def status_table(settings: Settings) -> dict[str, dict[str, str | None]]:
    repo = _repo(settings)
    main = repo.at_main()  # one commit for the whole table
    return {
        service: {env: main.pinned(service, env) for env in main.policy.env_names()}
        for service in repo.services()
    }


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Service x environment: the digest pinned on the GitOps repository's main."""
    settings = _settings()
    table = status_table(settings)
    if as_json:
        _echo_json({"services": table})
        return
    envs = list(next(iter(table.values())).keys()) if table else []
    rows = [["SERVICE", *[e.upper() for e in envs]]]
    for service, pins in table.items():
        rows.append([service, *[_short(pins[e]) for e in envs]])
    _print_rows(rows)


def _short(digest: str | None) -> str:
    return digest[:19] if digest else "-"


def _print_rows(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


# --- manifest ---------------------------------------------------------------------------------


def platform_manifest(settings: Settings, env: str) -> dict[str, Any]:
    """ENV's platform version: every service's pinned digest on main, named by a content hash of
    the sorted `service=digest` pairs (services with nothing pinned are left out)."""
    import hashlib

    repo = _repo(settings)
    main = repo.at_main()
    main.policy.environment(env)  # unknown environment: one line, not a traceback
    pins = {s: d for s in repo.services() if (d := main.pinned(s, env)) is not None}
    lines = "".join(f"{service}={digest}\n" for service, digest in sorted(pins.items()))
    version = "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    return {"environment": env, "version": version, "commit": main.commit, "services": pins}


@app.command()
def manifest(
    env: str = typer.Argument(..., help="Environment name."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The platform version of ENV: its services' digests and a hash that names the set."""
    found = platform_manifest(_settings(), env)
    if as_json:
        _echo_json(found)
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
    from ferry.core.names import check_label

    for value, what in ((service, "service"), (env, "environment")):
        try:
            check_label(value, what)
        except ValueError as e:
            fail(str(e))
    settings = _settings()
    try:
        forge = _forge()
    except Exception:  # noqa: BLE001 - explaining does not need the forge; leave PRs out
        forge = None
    found = gather(_repo(settings), _bus(settings), forge, service, env)
    if as_json:
        _echo_json(found.as_dict())
        return
    for line in render(found):
        typer.echo(line)


# --- dlq --------------------------------------------------------------------------------------


@dlq_app.command("ls")
def dlq_ls(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List dead letters, oldest first."""
    from ferry.app.replay import dead_letters

    letters = dead_letters(_bus(_settings()))
    if as_json:
        _echo_json([{"id": i, **json.loads(e.model_dump_json())} for i, e in letters])
        return
    if not letters:
        typer.echo("no dead letters")
        return
    rows = [["ID", "STREAM", "WORKER", "DELIVERIES", "ERROR"]]
    for i, e in letters:
        rows.append([i, e.stream, e.worker, str(e.deliveries), e.error])
    _print_rows(rows)


@dlq_app.command("show")
def dlq_show(
    entry_id: str = typer.Argument(..., help="The dead letter's id (from `ferry dlq ls`)."),
) -> None:
    """Show one dead letter whole: the reason and the original entry."""
    from ferry.app.replay import dead_letters

    [(i, letter)] = dead_letters(_bus(_settings()), [entry_id])
    _echo_json({"id": i, **json.loads(letter.model_dump_json())})


def _chosen(ids: list[str] | None, every: bool, verb: str) -> list[str] | None:
    if bool(ids) == every:
        fail(f"name the dead letters to {verb} (ids from `ferry dlq ls`) or pass --all, not both")
    return None if every else ids


@dlq_app.command("retry")
def dlq_retry(
    ids: list[str] | None = typer.Argument(None, help="Dead letter ids (from `ferry dlq ls`)."),
    every: bool = typer.Option(False, "--all", help="Every dead letter."),
) -> None:
    """Put dead letters back on their streams (after fixing the cause); done effects are skipped."""
    from ferry.app.replay import retry

    done = retry(_bus(_settings()), _chosen(ids, every, "retry"))
    typer.echo(f"retried {len(done)} dead letter{'s' * (len(done) != 1)}")


@dlq_app.command("drop")
def dlq_drop(
    ids: list[str] | None = typer.Argument(None, help="Dead letter ids (from `ferry dlq ls`)."),
    every: bool = typer.Option(False, "--all", help="Every dead letter."),
) -> None:
    """Delete dead letters for good."""
    from ferry.app.replay import drop

    done = drop(_bus(_settings()), _chosen(ids, every, "drop"))
    typer.echo(f"dropped {len(done)} dead letter{'s' * (len(done) != 1)}")


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
    from ferry.app.replay import replay, stream_bound

    first = start if start == "-" else stream_bound(start, "--from")
    last = end if end == "+" else stream_bound(end, "--to")
    chosen = replay(
        _bus(_settings()), stream, start=first, end=last, service=service, dry_run=dry_run
    )
    if as_json:
        _echo_json([{"id": c.entry_id, "fields": c.fields} for c in chosen])
        return
    verb = "would replay" if dry_run else "replayed"
    typer.echo(f"{verb} {len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'} of {stream}")
    if dry_run:
        for c in chosen:
            typer.echo(
                f"  {c.entry_id}  {c.fields.get('kind', '?')}  {c.fields.get('service', '')}"
            )


# --- audit ------------------------------------------------------------------------------------


def audit_records(settings: Settings, service: str | None, limit: int) -> list[Any]:
    """The newest LIMIT decisions (about SERVICE, if given), oldest first."""
    from ferry.core.events import AuditRecord, decode_fields, parse

    bus = _bus(settings)
    found: list[Any] = []
    last = "+"
    while len(found) < limit:
        batch = bus.redis.xrevrange(settings.stream("audit"), max=last, count=500)
        if not batch:
            break
        for _, raw in batch:
            record = parse("audit", decode_fields(raw))
            assert isinstance(record, AuditRecord)
            if service is None or record.subject.startswith(f"{service}@"):
                found.append(record)
                if len(found) == limit:
                    break
        last = "(" + batch[-1][0].decode()
    return list(reversed(found))


def short_subject(subject: str) -> str:
    """'api@sha256:<64 hex> -> dev' as 'api@4f1c2ab9d3e5 -> dev'."""
    return re.sub(r"sha256:([0-9a-f]{12})[0-9a-f]{52}", r"\1", subject)


@app.command()
def audit(
    service: str | None = typer.Option(None, help="Only decisions about this service."),
    limit: int = typer.Option(20, min=1, help="How many of the newest decisions."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Why digests moved or did not: the newest decisions of every worker, in words."""
    records = audit_records(_settings(), service, limit)
    if as_json:
        _echo_json([json.loads(r.model_dump_json()) for r in records])
        return
    if not records:
        typer.echo("no decisions recorded")
        return
    rows = [["WHEN", "WORKER", "SUBJECT", "OUTCOME", "REASON"]]
    for r in records:
        rows.append(
            [f"{r.occurred_at:%H:%M:%S}", r.worker, short_subject(r.subject), r.outcome, r.reason]
        )
    _print_rows(rows)


# --- pr ---------------------------------------------------------------------------------------


def _forge():  # noqa: ANN202
    from ferry.runtime.resources import forge

    return forge(_settings())


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
    prs = _forge().list_prs(state=state)
    if as_json:
        _echo_json([_pr_dict(p) for p in prs])
        return
    if not prs:
        typer.echo("no pull requests")
        return
    rows = [["#", "STATE", "TITLE", "BRANCH"]]
    rows += [[str(p.number), p.state, p.title, p.head] for p in prs]
    _print_rows(rows)


def _get_pr(number: int) -> Any:
    from ferry.adapters.forge import PullRequestNotFound

    try:
        return _forge().get_pr(number)
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
        _echo_json(_pr_dict(pr))
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
        bus = _bus(_settings())
    except Exception:  # noqa: BLE001 - no Ferry running: the forge alone is still usable
        return
    promotion = PromotionStore(bus).get(pr.key)
    if promotion is None:
        return
    change = Change(
        kind=kind,  # type: ignore[arg-type]
        event_id=f"{pr.key}:{kind}",
        promotion_id=pr.key,
        service=promotion["service"],
        digest=promotion["digest"],
        env=promotion["target_env"],
        source_env=promotion["source_env"],
        pr=pr.number,
        **extra,
    )
    bus.publish_once(f"change:{pr.key}:{kind}", change)


@pr_app.command("merge")
def pr_merge(number: int = typer.Argument(..., help="Pull request number.")) -> None:
    """Merge a pull request into main (a real git merge)."""
    pr = _get_pr(number)
    if pr.state == "closed":
        fail(f"pull request #{number} is closed: it cannot be merged")
    pr = _forge().merge_pr(number)
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
    pr = _forge().close_pr(number, comment=comment)
    _report(pr, "pr_closed", reason=comment)
    typer.echo(f"#{pr.number} closed")


# --- demo -------------------------------------------------------------------------------------


@app.command()
def demo(
    keep: bool = typer.Option(False, help="Keep the scratch directory and print where it is."),
) -> None:
    """Run the whole flow on embedded parts: build, CI, a refused tag, dev and staging merges."""
    from ferry.cli.demo import run_demo

    sys.exit(run_demo(keep=keep))


# --- entry point ------------------------------------------------------------------------------


def _known_errors() -> tuple[type[BaseException], ...]:
    from ferry.adapters.embedded import NoRedis
    from ferry.adapters.forge import ForgeError
    from ferry.adapters.git import GitError
    from ferry.adapters.scaffold import ScaffoldError
    from ferry.app.replay import ReplayError
    from ferry.core.errors import Rejected
    from ferry.core.policy import PolicyError
    from ferry.runtime.resources import ConfigError

    return (
        CliError,
        NoRedis,
        Rejected,
        ForgeError,
        GitError,
        PolicyError,
        ConfigError,
        ScaffoldError,
        ReplayError,
    )


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every mistake ends as one line on stderr and exit code 2."""
    import pydantic
    import redis

    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="ferry", standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.exceptions.TyperException as e:
        # Click's usage errors (typer vendors click): one line instead of a usage block.
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        typer.echo(f"error: {message}{hint}", err=True)
        sys.exit(2)
    except pydantic.ValidationError as e:
        from ferry.core.events import describe

        typer.echo(f"error: invalid setting: {describe(e)}", err=True)
        sys.exit(2)
    except redis.ConnectionError as e:
        typer.echo(
            f"error: cannot reach Redis ({e}): is `ferry up` running, or FERRY_REDIS_URL right?",
            err=True,
        )
        sys.exit(2)
    except Exception as e:  # noqa: BLE001
        if isinstance(e, _known_errors()):
            from ferry.runtime.logging import scrub_text

            typer.echo(f"error: {scrub_text(str(e))}", err=True)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
