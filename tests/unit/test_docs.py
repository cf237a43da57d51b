"""The examples in docs/events.md are real: every XADD line parses into its event."""

from __future__ import annotations

import shlex
from pathlib import Path

from ferry.core.events import parse

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def test_every_documented_xadd_parses() -> None:
    lines = [line for line in DOC.read_text().splitlines() if line.startswith("XADD ")]
    assert len(lines) >= 9
    for line in lines:
        _, key, star, *rest = shlex.split(line)
        assert key.startswith("ferry:") and star == "*"
        fields = dict(zip(rest[::2], rest[1::2], strict=True))
        event = parse(key.removeprefix("ferry:"), fields, entry_id="1-0")
        assert event.on_stream == key.removeprefix("ferry:")
