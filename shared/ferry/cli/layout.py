"""ferry migrate-keys: an existing deployment's keys moved to the cluster-ready layout."""

from __future__ import annotations

import typer

from ferry.cli.app import app, connect_bus, echo_json, load_settings


@app.command("migrate-keys")
def migrate_keys(
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would move; move nothing."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Move the keys an earlier Ferry wrote under names that changed (publish-once markers,
    preview records, preview-reaper's due times; docs/redis.md): once, with the workers stopped,
    on the server it used. Running it again moves nothing."""
    from ferry.app.layout import migrate

    moved = migrate(connect_bus(load_settings()), dry_run=dry_run)
    if as_json:
        echo_json(moved.as_dict())
        return
    verb = "would move" if dry_run else "moved"
    typer.echo(
        f"{verb} {moved.once} publish-once markers, {moved.previews} preview records and team "
        f"sets, {moved.due} preview due times"
    )
