"""The `ferry` command: the interface people and scripts rely on. Each command group lives in
its own module; importing them registers their commands on the one typer app."""

from __future__ import annotations

import gc
import sys
import traceback
from typing import NoReturn

# Importing the commands (typer, redis-py, pydantic's models) makes a few hundred thousand objects
# that live as long as the process; the cyclic collector, run again and again meanwhile, would
# take about a seventh of the import (0.04 s of 0.28 s). It runs again once they are in, frozen
# (gc.freeze: kept out of every later collection, which would otherwise walk them all once).
_collecting = gc.isenabled()
gc.disable()
try:
    import typer

    from ferry.cli import app as app_module
    from ferry.cli import (  # noqa: F401 - registers the commands
        board,
        canary,
        dlq,
        docs,
        hold,
        ingress,
        layout,
        pr,
        previews,
        publish,
        rollback,
        stats,
        views,
        workers,
    )
    from ferry.cli.app import CliError, app
finally:
    gc.freeze()
    if _collecting:
        gc.enable()

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
    from ferry.runtime.runner import AlreadyUp

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
        AlreadyUp,
    )


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every mistake ends as one line on stderr and exit code 2. Nothing it prints
    carries a secret: every error goes through the scrubber."""
    import pydantic
    import redis

    from ferry.core.errors import one_line
    from ferry.runtime.logging import scrub_text

    def say(message: str, code: int = 2) -> NoReturn:
        typer.echo(f"error: {one_line(scrub_text(message), limit=1000)}", err=True)
        sys.exit(code)

    app_module._program = argv is None
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
        say(f"{message}{hint}")
    except pydantic.ValidationError as e:
        from ferry.core.events import describe

        say(f"invalid setting: {describe(e)}")
    except redis.ConnectionError as e:
        say(f"cannot reach Redis ({e}): is `ferry up` running, or FERRY_REDIS_URL right?")
    except redis.exceptions.NoPermissionError as e:
        say(f"Redis refused: {e} (FERRY_REDIS_URL's user may not do this: see docs/redis.md)")
    except Exception as e:  # noqa: BLE001
        if isinstance(e, _known_errors()):
            say(str(e))
        # A bug: the traceback helps, but it is scrubbed like every other line.
        sys.stderr.write(scrub_text(traceback.format_exc()))
        sys.exit(1)


if __name__ == "__main__":
    main()
