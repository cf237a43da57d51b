"""ferry publish ci|check, ferry approve|reject|promote: events people and jobs send, checked
against the policy and main first (`--no-check` publishes blind)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from ferry.app.checks import check_promote, check_service, check_word
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

AS_JSON = typer.Option(False, "--json", help="Print the published entry as JSON.")
NO_CHECK = typer.Option(
    False, "--no-check", help="Publish without checking against ferry.yaml and main first."
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
    no_check: bool = NO_CHECK,
) -> None:
    """Publish a CI result: a build (no --env) or checks run against a digest in --env."""
    from ferry.app.checks import check_build
    from ferry.core.events import CiResult

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
    event = parsed("ci", fields)
    assert isinstance(event, CiResult)
    if not no_check:
        checked(lambda main: check_build(main, event.service, event.image, event.env))
    published(event, f"published {event.event_id}", as_json=as_json)


@publish_app.command("check")
def publish_check(
    service: str = typer.Option(..., help="Service name."),
    digest: str = typer.Option(..., help="Image digest: sha256:<64 hex>."),
    env: str = typer.Option(..., help="Environment the check ran against."),
    check: str = typer.Option(..., help="Name of the check (e.g. load-test)."),
    status: str = typer.Option("success", help="success or failure."),
    reason: str | None = typer.Option(None, help="A word on the result."),
    as_json: bool = AS_JSON,
    no_check: bool = NO_CHECK,
) -> None:
    """Publish a check result (a job's, e.g. a load test) for a digest live in --env."""
    _publish_signal(
        as_json,
        None if no_check else (lambda main: check_service(main, service, env)),
        kind="check",
        service=service,
        digest=digest,
        env=env,
        check=check,
        status=status,
        reason=reason,
    )


def checked(check: Callable[[Any], None]) -> None:
    """Run CHECK on main; a mistake it finds ends the command with one line."""
    from ferry.core.errors import Rejected
    from ferry.core.policy import PolicyError

    try:
        check(open_repo(load_settings()).at_main())
    except (Rejected, PolicyError) as e:
        fail(f"{e} (--no-check publishes anyway)")


def _publish_signal(
    as_json: bool, verify: Callable[[Any], None] | None, **fields: str | None
) -> None:
    event = parsed("signals", fields)
    if verify is not None:
        checked(verify)
    published(event, f"published {event.kind} {event.event_id}", as_json=as_json)


def _word(
    kind: str,
    service: str,
    digest: str,
    env: str,
    actor: str,
    reason: str | None,
    as_json: bool,
    no_check: bool,
) -> None:
    """Publish a person's approval or rejection, checked first unless NO_CHECK."""
    _publish_signal(
        as_json,
        None if no_check else (lambda main: check_word(main, service, env, actor, kind)),
        kind=kind,
        service=service,
        digest=digest,
        env=env,
        actor=actor,
        reason=reason,
    )


@app.command()
def approve(
    service: str = typer.Argument(..., help="Service name."),
    digest: str = typer.Argument(..., help="The digest to approve (sha256:<64 hex>)."),
    env: str = typer.Option(..., help="The environment it may go to."),
    actor: str = typer.Option(..., "--as", help="Who approves (must be an approver)."),
    reason: str | None = typer.Option(None, help="Why."),
    as_json: bool = AS_JSON,
    no_check: bool = NO_CHECK,
) -> None:
    """Approve a digest for an environment whose policy asks for approvals."""
    _word("approval", service, digest, env, actor, reason, as_json, no_check)


@app.command()
def reject(
    service: str = typer.Argument(..., help="Service name."),
    digest: str = typer.Argument(..., help="The digest to reject (sha256:<64 hex>)."),
    env: str = typer.Option(..., help="The environment it must not go to."),
    actor: str = typer.Option(..., "--as", help="Who rejects (must be an approver)."),
    reason: str = typer.Option(..., help="Why: shown to everyone who asks."),
    as_json: bool = AS_JSON,
    no_check: bool = NO_CHECK,
) -> None:
    """Reject a digest for an environment: it does not move there while the rejection stands."""
    _word("rejection", service, digest, env, actor, reason, as_json, no_check)


@app.command()
def promote(
    service: str = typer.Argument(..., help="Service name."),
    env: str = typer.Argument(..., help="The environment to promote into."),
    digest: str | None = typer.Argument(
        None, help="The digest (default: the one live in the environment ENV is promoted from)."
    ),
    actor: str = typer.Option(..., "--as", help="Who asks (audited)."),
    reason: str | None = typer.Option(None, help="Why."),
    as_json: bool = AS_JSON,
    no_check: bool = NO_CHECK,
) -> None:
    """Ask for DIGEST in ENV again: after its pull request was closed, its merge reverted on main
    or its digest rolled back. The gates apply as to any promotion."""
    from ferry.adapters.state import PromotionStore
    from ferry.app.explain import decision_for
    from ferry.core.events import promotion_id

    check_names(service=service, environment=env, actor=actor)
    settings = load_settings()
    if digest is None:
        main = open_repo(settings).at_main()
        digest = decision_for(connect_bus(settings), main, service, env).digest
        if digest is None:
            fail(f"nothing to promote into {env} for {service}: name the digest")
    if not no_check:
        view = PromotionStore(connect_bus(settings)).view(promotion_id(service, digest, env))
        if view is not None and view.state in ("requested", "open"):
            fail(f"{digest[:19]} is already on its way to {env} (PR #{view.pr} {view.state})")
    _publish_signal(
        as_json,
        None if no_check else (lambda main: check_promote(main, service, env, digest)),
        kind="promote",
        service=service,
        digest=digest,
        env=env,
        actor=actor,
        reason=reason,
    )
