"""The `ferry` command's typer apps and the helpers every command group uses."""

from __future__ import annotations

import json
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


def check_names(service: str, env: str) -> None:
    """Fail with one line unless SERVICE and ENV are DNS labels."""
    from ferry.core.names import check_label

    for value, what in ((service, "service"), (env, "environment")):
        try:
            check_label(value, what)
        except ValueError as e:
            fail(str(e))


def load_settings() -> Settings:
    return Settings()


def connect_bus(settings: Settings):  # noqa: ANN201 - a Bus
    from ferry.runtime.resources import connect

    return connect(settings)


def open_repo(settings: Settings):  # noqa: ANN201 - a GitOpsRepo
    from ferry.runtime.resources import open_repo

    return open_repo(settings)


def open_forge():  # noqa: ANN201 - a Forge
    from ferry.runtime.resources import forge

    return forge(load_settings())


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def short(digest: str | None) -> str:
    return digest[:19] if digest else "-"


def print_rows(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
