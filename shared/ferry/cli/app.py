"""The `ferry` command's typer apps and the helpers every command group uses."""

from __future__ import annotations

import json
import os
import sys
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


# Set by main() when `ferry` runs as a program of its own (not called in a test's process).
_program = False


def end_now() -> None:
    """End the process here, its output written, when `ferry` runs as a program: a command
    that leaves nothing behind (no thread, no write, no child), called last. The interpreter's
    teardown frees every object one by one: after `ferry status` at 10,000 services, about a
    million. Called in-process (tests), it returns."""
    if not _program:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # a closed pipe: the interpreter's own exit reports it as it would have
    os._exit(0)


def fail(message: str) -> NoReturn:
    raise CliError(message)


def check_names(**names: str | None) -> None:
    """Refuse, before anything is read or published, a service or environment argument that is
    not a DNS label and any other name (actor, check) with surrounding whitespace or control
    characters ("api\\n" included): check_names(service=..., environment=..., actor=...)."""
    from ferry.core.names import check_label, check_name

    for what, value in names.items():
        if value is not None:
            check = check_label if what in ("service", "environment") else check_name
            try:
                check(value, what)
            except ValueError as e:
                fail(str(e))


def parsed(stream: str, fields: dict[str, str | None]) -> Any:
    """The event FIELDS make on STREAM; a mistake ends the command with one line."""
    from ferry.core.events import InvalidEvent, parse

    try:
        return parse(stream, given(fields))
    except InvalidEvent as e:
        fail(str(e))


def published(event: Any, said: str, *, as_json: bool = False) -> None:
    """Publish EVENT and say so: '<SAID> as <entry id>', or the entry as JSON."""
    entry = connect_bus(load_settings()).publish(event)
    if as_json:
        echo_json({"entry_id": entry, "event": event.to_fields()})
    else:
        typer.echo(f"{said} as {entry}")


def given(fields: dict[str, str | None]) -> dict[str, str]:
    """The options given for an event, scrubbed: a secret pasted into one never reaches an error
    line whole or in part (a sentence quotes only a prefix of a bad value)."""
    from ferry.runtime.logging import scrub_fields

    load_settings()  # reading the settings registers the secrets to scrub
    return scrub_fields({k: v for k, v in fields.items() if v is not None})


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
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    # One format for every row, one write: `ferry status` prints a line per service (10,000 and
    # more).
    line = "  ".join(f"{{:<{w}}}" for w in widths).format
    typer.echo("\n".join(line(*row).rstrip() for row in rows))


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"ferry {version('ferry')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    pass
