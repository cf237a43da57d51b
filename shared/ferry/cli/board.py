"""ferry board: the live, read-only web page of every service x environment."""

from __future__ import annotations

import typer

from ferry.cli.app import app, fail, load_settings


@app.command()
def board(
    host: str | None = typer.Option(None, help="Address to listen on [FERRY_BOARD_HOST]."),
    port: int | None = typer.Option(
        None, min=0, max=65535, help="Port to listen on [FERRY_BOARD_PORT, 8090]."
    ),
) -> None:
    """Serve the board: every service x environment, what waits and why, live in a browser."""
    from ferry.board.app import serve
    from ferry.runtime.resources import gitops_remote

    settings = load_settings()
    gitops_remote(settings)  # say what is missing before anything starts
    host = host or settings.board_host
    port = settings.board_port if port is None else port
    if not host.strip():
        fail("--host needs an address, e.g. --host 127.0.0.1")
    typer.echo(f"ferry board: http://{host}:{port}/")
    serve(settings, host, port)
