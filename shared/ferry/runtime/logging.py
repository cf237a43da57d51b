"""structlog set up once per process: JSON lines on stderr, context (event_id, promotion_id) bound
per message with contextvars (the entry or due member a thread handles: `set_context`), and
secrets scrubbed from every line.

Two kinds of secret are scrubbed: the user information of any URL (`redis://:PASSWORD@host`,
`https://user:token@host`), and every secret value this process was configured with (the
settings register them: FERRY_FORGE_TOKEN, the password in FERRY_REDIS_URL), wherever it appears.
The scrubber runs in time linear in its input, so a megabyte of hostile text cannot stall it."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from ferry.core.errors import one_line

MASK = "***"
_SECRET_KEYS = re.compile(r"(token|secret|password|authorization)", re.I)
# scheme://userinfo@ — the look-behind lets a match start only where a scheme can start, which
# keeps the search linear (a bare `\w+://` retried at every letter of a long word is quadratic).
# The user information stops at the last '@' before anything a URL's userinfo cannot hold
# unescaped ('/', whitespace, quotes), so it never swallows the JSON or text around the URL.
_URL_CREDENTIALS = re.compile(r"(?<![\w+.-])([A-Za-z][\w+.-]*://)[\w.~%!$&()*+,;=:@-]*@")
# Longest first, so that a secret containing another is masked whole.
_secrets: tuple[str, ...] = ()


def add_secrets(values: Iterable[str | None]) -> None:
    """Scrub each of VALUES from every log line and error sentence of this process from now on."""
    global _secrets
    _secrets = tuple(sorted({*_secrets, *(v for v in values if v)}, key=len, reverse=True))


def scrub_text(text: str) -> str:
    """TEXT without URL credentials and without any registered secret value."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if "://" in text and "@" in text:
        text = _URL_CREDENTIALS.sub(rf"\1{MASK}@", text)
    return text


def one_reason(text: str) -> str:
    """TEXT as a reason that leaves the process (a log line, a dead letter): scrubbed first, so
    that cutting it cannot leave half a secret behind, then one line of bounded length."""
    return one_line(scrub_text(text))


def scrub_fields(fields: Mapping[str, str]) -> dict[str, str]:
    """Stream entry FIELDS with secrets scrubbed from every name and value."""
    return {scrub_text(k): scrub_text(v) for k, v in fields.items()}


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, Mapping):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_scrub_value(v) for v in value]
    return value


def _scrub(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Never let a token, a configured secret or a password in a URL reach a log line."""
    for key, value in list(event_dict.items()):
        if _SECRET_KEYS.search(key) and value not in (None, ""):
            event_dict[key] = MASK
        else:
            event_dict[key] = _scrub_value(value)
    return event_dict


def _scrub_line(_: Any, __: str, line: str) -> str:
    # After rendering: whatever a renderer produced from values the first pass did not see.
    return scrub_text(line)


class _ScrubbingFormatter(logging.Formatter):
    """Libraries log through the standard library (FastStream, redis-py): scrub those lines too,
    tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub_text(super().format(record))


class _CurrentStderr:
    """sys.stderr as it is at each write, not as it was at configure time (a test harness or a
    daemon may swap it, and a closed stream must not break logging)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


# What this thread handles now (an entry, a due member): one variable set once per entry and
# merged into a line only when one is written. (structlog's own context, one variable per key,
# cleared and bound again for every entry, cost more than the rest of the dispatcher's
# bookkeeping, for lines that are seldom written.)
_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("ferry_log_context", default=None)


def set_context(**values: Any) -> None:
    """This thread's log lines carry VALUES from now on, and nothing bound before."""
    _CONTEXT.set(values)


def add_context(**values: Any) -> None:
    """This thread's log lines carry VALUES too, from now on."""
    current = _CONTEXT.get()
    if current is None:
        _CONTEXT.set(values)
    else:
        current.update(values)


def _merge_context(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    current = _CONTEXT.get()
    if current:
        for key, value in current.items():
            event_dict.setdefault(key, value)
    return event_dict


def configure(level: str = "INFO", fmt: str = "json") -> None:
    import structlog  # here, not at the top: a CLI command that logs nothing never loads it

    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _merge_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _scrub,
        renderer,
        _scrub_line,
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
    handler = logging.StreamHandler(_CurrentStderr())  # type: ignore[arg-type]
    handler.setFormatter(_ScrubbingFormatter(logging.BASIC_FORMAT))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def get_logger(**bound: Any) -> Any:
    """A structlog logger with BOUND context, made when first used: a Bus asks for one when it is
    made, and a CLI command that never logs does not load structlog for it."""
    return _Lazy(bound)


class _Lazy:
    def __init__(self, bound: dict[str, Any]) -> None:
        self._bound = bound
        self._logger: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._logger is None:
            import structlog

            self._logger = structlog.get_logger(**self._bound)
        return getattr(self._logger, name)
