"""structlog set up once per process: JSON lines on stderr, context (event_id, promotion_id) bound
per message with contextvars, and secrets scrubbed from every line."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"(token|secret|password|authorization)", re.I)
_URL_CREDENTIALS = re.compile(r"(\w+://)([^/@\s:]+(:[^/@\s]*)?)@")


def _scrub(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Never let a token or a password in a URL reach a log line."""
    for key, value in list(event_dict.items()):
        if _SECRET_KEYS.search(key) and value not in (None, ""):
            event_dict[key] = "***"
        elif isinstance(value, str) and "@" in value:
            event_dict[key] = _URL_CREDENTIALS.sub(r"\1***@", value)
    return event_dict


def scrub_text(text: str) -> str:
    """Remove credentials from URLs in TEXT (used for error sentences that leave the process)."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


class _CurrentStderr:
    """sys.stderr as it is at each write, not as it was at configure time (a test harness or a
    daemon may swap it, and a closed stream must not break logging)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _scrub,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    # FastStream and other libraries log through the standard library: keep them quiet and on
    # stderr so that only Ferry's structured lines tell the story.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger(**bound)
