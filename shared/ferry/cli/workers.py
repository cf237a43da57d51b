"""ferry init, worker, up and demo: make a GitOps repository and run the workers."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ferry.cli.app import (
    app,
    fail,
    load_settings,
)

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
    settings = load_settings()
    if spec.handlers:
        gitops_remote(settings)  # say what is missing before anything starts
    run_worker(name, settings)


@app.command()
def up() -> None:
    """Run all four workers, each its own process (embedded server if FERRY_REDIS_URL is unset)."""
    from ferry.runtime.resources import gitops_remote
    from ferry.runtime.runner import run_up

    settings = load_settings()
    gitops_remote(settings)
    run_up(settings)


# --- demo -------------------------------------------------------------------------------------


@app.command()
def demo(
    keep: bool = typer.Option(False, help="Keep the scratch directory and print where it is."),
) -> None:
    """Run the whole flow on embedded parts: build, CI, a refused tag, dev and staging merges."""
    from ferry.cli.demo import run_demo

    sys.exit(run_demo(keep=keep))
