"""ferry docs: documents generated from the code (the AsyncAPI description of the workers)."""

from __future__ import annotations

from pathlib import Path

import typer

from ferry.cli.app import app, fail

docs_app = typer.Typer(help="Documents generated from the code.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")


@docs_app.command("asyncapi")
def docs_asyncapi(
    out: Path = typer.Option(
        Path("docs/asyncapi"), "--out", help="Directory to write the document into."
    ),
    check: bool = typer.Option(
        False, "--check", help="Write nothing; fail when the document in --out is stale."
    ),
) -> None:
    """Write the AsyncAPI 3.0 document of every worker (streams, groups, event payloads)."""
    from ferry.runtime import asyncapi

    path = out / asyncapi.FILE
    if check:
        committed = path.read_text(encoding="utf-8") if path.exists() else None
        if committed != asyncapi.render():
            fail(f"{path} is stale: run `ferry docs asyncapi --out {out}` (or `make asyncapi`)")
        typer.echo(f"{path} is up to date")
        return
    typer.echo(f"wrote {asyncapi.write(out)}")
