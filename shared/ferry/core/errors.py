"""Errors that decide what the bus does with an entry, and how their sentences quote input."""

from __future__ import annotations

from typing import Any

# A sentence quotes at most this much of a bad value: enough to recognise it and to see a stray
# character after a digest, never the whole of a megabyte (the dead letter's payload keeps it).
QUOTE_MAX = 100
# A reason (dead letter, log line, audit) is one line of at most this many characters.
REASON_MAX = 500


class Rejected(ValueError):
    """Permanent: retrying cannot help. The entry goes to the dead-letter stream at once, and the
    message is the sentence a person reads there, so it must say what to fix."""


def quote(value: Any, limit: int = QUOTE_MAX) -> str:
    """VALUE as a sentence quotes it: repr() of at most LIMIT characters, and the full length when
    it was cut ('AAAA'… (1048576 characters))."""
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit + 2 else f"{text[:limit]}… ({len(text)} characters)"


def one_line(text: str, limit: int = REASON_MAX) -> str:
    """TEXT as one line of at most LIMIT characters: line breaks become ' | ', the rest is cut."""
    cut = len(text) > 4 * limit
    # Split only what can be shown: the text may be a megabyte.
    flat = " | ".join(part.strip() for part in text[: 4 * limit].splitlines() if part.strip())
    return flat if len(flat) <= limit and not cut else flat[: limit - 1] + "…"
