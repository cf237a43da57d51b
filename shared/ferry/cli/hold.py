"""ferry hold|release: stop promotions into an environment (one service's, or every one's) and
lift the stop. Both are audited; the hold is a gate `ferry explain` and `ferry status` show."""

from __future__ import annotations

from typing import Any

import typer

from ferry.cli.app import app, check_names, fail, published
from ferry.cli.publish import AS_JSON, NO_CHECK, checked


def _scope(args: list[str], every: bool, verb: str) -> tuple[str | None, str]:
    """(service, or None for --all; environment) from `SERVICE ENV` or `--all ENV`."""
    if every and len(args) == 1:
        return None, args[0]
    if not every and len(args) == 2:
        return args[0], args[1]
    fail(f"say what to {verb}: `ferry {verb} SERVICE ENV --as USER` or `ferry {verb} --all ENV`")


def _publish(
    kind: str,
    args: list[str],
    every: bool,
    actor: str,
    reason: str | None,
    as_json: bool,
    no_check: bool,
) -> None:
    from ferry.app.checks import check_service
    from ferry.core.events import Hold

    service, env = _scope(args, every, kind)
    check_names(service=service, environment=env, actor=actor)

    def check(main: Any) -> None:
        if service is None:
            main.policy.environment(env)
        else:
            check_service(main, service, env)

    if not no_check:
        checked(check)
    event = Hold(kind=kind, env=env, service=service, actor=actor, reason=reason)  # type: ignore[arg-type]
    published(event, f"{kind} of {event.scope} published", as_json=as_json)


SCOPE = typer.Argument(..., help="SERVICE ENV, or ENV with --all.")
EVERY = typer.Option(False, "--all", help="Every service in ENV.")


@app.command()
def hold(
    scope: list[str] = SCOPE,
    every: bool = EVERY,
    actor: str = typer.Option(..., "--as", help="Who holds (audited)."),
    reason: str = typer.Option(..., help="Why: shown by explain and status."),
    as_json: bool = AS_JSON,
    no_check: bool = NO_CHECK,
) -> None:
    """Stop promotions of SERVICE (or --all) into ENV until `ferry release`."""
    _publish("hold", scope, every, actor, reason, as_json, no_check)


@app.command()
def release(
    scope: list[str] = SCOPE,
    every: bool = EVERY,
    actor: str = typer.Option(..., "--as", help="Who releases (audited)."),
    reason: str | None = typer.Option(None, help="Why."),
    as_json: bool = AS_JSON,
    no_check: bool = NO_CHECK,
) -> None:
    """Lift a hold of SERVICE (or --all) in ENV: what waited on it is decided again."""
    _publish("release", scope, every, actor, reason, as_json, no_check)
