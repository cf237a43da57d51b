"""ferry init, worker, up and demo: make a GitOps repository and run the workers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from ferry.cli.app import (
    app,
    echo_json,
    fail,
    load_settings,
    print_rows,
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
        ..., help="gate-evaluator, pr-writer, canary-watcher, preview-reaper or notifier"
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
    """Run every worker, the board and the webhook ingress, each its own process (embedded
    server if FERRY_REDIS_URL is unset)."""
    from ferry.runtime.resources import gitops_remote
    from ferry.runtime.runner import run_up

    settings = load_settings()
    gitops_remote(settings)
    run_up(settings)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@app.command()
def ps(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """What `ferry up` runs on this FERRY_HOME: its pid and each worker's."""
    from ferry.runtime.runner import up_state

    settings = load_settings()
    state = up_state(settings)
    if as_json:
        workers = (state or {}).get("workers", {})
        echo_json(
            {
                "running": state is not None,
                "home": str(settings.home),
                **(state or {}),
                "workers": {n: {"pid": p, "alive": _alive(p)} for n, p in workers.items()},
            }
        )
        return
    if state is None:
        typer.echo(f"ferry up is not running on FERRY_HOME={settings.home}")
        return
    typer.echo(f"ferry up (pid {state.get('pid')}) since {state.get('started', '?')}")
    rows = [["WORKER", "PID", "STATE"]]
    for name, pid in sorted(state.get("workers", {}).items()):
        rows.append([name, str(pid), "running" if _alive(pid) else "restarting"])
    print_rows(rows)


@app.command()
def down(
    timeout: float = typer.Option(60.0, help="Seconds to wait for the workers to stop."),
) -> None:
    """Stop what `ferry up` runs on this FERRY_HOME (its workers finish what they hold)."""
    import signal
    import time

    from ferry.runtime.runner import up_state

    settings = load_settings()
    state = up_state(settings)
    if state is None:
        typer.echo(f"ferry up is not running on FERRY_HOME={settings.home}: nothing to stop")
        return
    pid = state.get("pid")
    if not pid:
        fail("ferry up is still starting: try `ferry down` again in a moment")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while up_state(settings) is not None:
        if time.monotonic() > deadline:
            fail(f"ferry up (pid {pid}) did not stop within {timeout:.0f} s: kill {pid}")
        time.sleep(0.2)
    typer.echo(f"stopped ferry up (pid {pid}) and its {len(state.get('workers', {}))} workers")


# --- demo -------------------------------------------------------------------------------------


@app.command()
def demo(
    keep: bool = typer.Option(False, help="Keep the scratch directory and print where it is."),
    serve: bool | None = typer.Option(
        None,
        help="Keep the workers and the board up after the story, until Ctrl-C "
        "[default: when run in a terminal].",
    ),
) -> None:
    """Run the whole flow on embedded parts: build, CI, a refused tag, dev and staging merges;
    it ends with the address of the board that shows it."""
    from ferry.cli.demo import run_demo

    if serve is None:
        serve = sys.stdin.isatty() and sys.stdout.isatty()
    sys.exit(run_demo(keep=keep, serve=serve))
