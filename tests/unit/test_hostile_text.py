"""Hostile text in events: whole-string name checks, bounded one-line reasons, non-UTF-8 entries
kept readable and reversible, and JSON nested too deeply to read."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ferry.core.errors import QUOTE_MAX, REASON_MAX, one_line, quote
from ferry.core.events import InvalidEvent, decode_entry, parse
from ferry.core.names import check_digest, check_label, check_name

D = "sha256:" + "ab" * 32
P = "p-0123456789abcdef"
# Whitespace and invisible characters a producer's template or shell can add around a value.
JUNK = ["\n", "\r\n", " ", "\t", "\x00", "\x0b", "\u00a0", "\u200b", "\u2028"]

# One valid entry per stream, and the name, digest and environment fields of each.
VALID: dict[str, dict[str, str]] = {
    "ci": {
        "kind": "ci",
        "event_id": "gh-run-1",
        "service": "api",
        "digest": D,
        "image": "registry.example.com/shop/api",
        "env": "dev",
        "check": "integration",
        "author": "alice",
        "commit": "4f1c2ab",
    },
    "signals": {
        "kind": "approval",
        "service": "api",
        "digest": D,
        "env": "prod",
        "actor": "release-lead",
        "check": "load-test",
    },
    "promotions": {
        "kind": "open",
        "promotion_id": P,
        "service": "api",
        "digest": D,
        "source_env": "dev",
        "target_env": "staging",
        "strategy": "direct",
    },
    "changes": {
        "kind": "pr_merged",
        "promotion_id": P,
        "service": "api",
        "digest": D,
        "env": "staging",
        "source_env": "dev",
        "merge_commit": "9c1d2e3f",
    },
    "canary": {
        "kind": "measurement",
        "service": "api",
        "digest": D,
        "env": "prod",
        "metric": "error-rate",
        "phase": "successful",
    },
    "previews": {"kind": "opened", "repo": "shop/api", "pr": "7", "team": "payments"},
}
NAME_FIELDS = [
    (stream, field)
    for stream, fields in VALID.items()
    for field in fields
    if field not in ("kind", "phase", "pr")
]


@pytest.mark.parametrize("stream", VALID)
def test_the_valid_entries_parse(stream: str) -> None:
    parse(stream, VALID[stream])


@pytest.mark.parametrize(("stream", "field"), NAME_FIELDS)
@pytest.mark.parametrize("junk", JUNK, ids=repr)
@pytest.mark.parametrize("where", ["after", "before"])
def test_whitespace_around_a_name_digest_or_environment_is_refused(
    stream: str, field: str, junk: str, where: str
) -> None:
    value = VALID[stream][field]
    bad = value + junk if where == "after" else junk + value
    with pytest.raises(InvalidEvent) as refused:
        parse(stream, {**VALID[stream], field: bad})
    reason = str(refused.value)
    assert field in reason and repr(bad) in reason  # the whole short value, junk visible
    assert "\n" not in reason


@given(st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True), st.sampled_from(JUNK))
def test_a_label_or_digest_with_a_trailing_line_break_never_passes(label: str, junk: str) -> None:
    assert check_label(label) == label
    for bad in (label + junk, junk + label, label + junk + label):
        with pytest.raises(ValueError):
            check_label(bad)
    with pytest.raises(ValueError):
        check_digest(D + junk)
    with pytest.raises(ValueError):
        check_name(label + junk)


def test_inner_spaces_are_fine_in_free_names() -> None:
    assert check_name("Jane Doe") == "Jane Doe"


@given(st.text(max_size=3000) | st.binary(max_size=3000))
@example("A" * (1 << 20))
def test_a_quote_is_short_and_one_line_whatever_it_quotes(value: Any) -> None:
    quoted = quote(value)
    assert len(quoted) <= QUOTE_MAX + 40 and "\n" not in quoted
    assert quoted.startswith(repr(value)[: QUOTE_MAX // 2])


@given(st.text(max_size=5000))
@example("x\n" * (1 << 19))
def test_a_reason_is_one_bounded_line(text: str) -> None:
    line = one_line(text)
    assert len(line) <= REASON_MAX and len(line.splitlines()) <= 1


def unescape(text: str) -> bytes:
    """The inverse of the dead letter's backslash escapes (what a person would do to recover)."""
    out, i, raw = bytearray(), 0, text.encode()
    while i < len(raw):
        if raw[i : i + 2] == b"\\\\":
            out += b"\\"
            i += 2
        elif raw[i : i + 2] == b"\\x":
            out.append(int(raw[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


fields_strategy = st.dictionaries(st.binary(max_size=12), st.binary(max_size=40), min_size=1)


@given(fields_strategy)
@example({b"\xff\xfe": b"x"})
@example({b"kind": b"ci", b"a\\xff": b"\xff", b"\\": b"\\\\x"})
def test_non_utf8_entries_are_kept_readable_and_reversible(raw: dict[bytes, bytes]) -> None:
    fields, not_text = decode_entry(raw)
    try:
        as_text = {k.decode(): v.decode() for k, v in raw.items()}
    except UnicodeDecodeError:
        as_text = None
    if as_text is not None:
        assert not not_text and fields == as_text
        return
    assert not_text and {unescape(k): unescape(v) for k, v in fields.items()} == raw
    json.dumps(fields)  # storable as the dead letter's JSON payload
    with pytest.raises(InvalidEvent, match="is not UTF-8 text"):
        parse("ci", fields, not_text=not_text)


@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
def test_json_nested_too_deeply_is_a_sentence_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(InvalidEvent, match="field 'json' is JSON nested too deeply"):
        parse("ci", {"json": "[" * depth + "]" * depth})
    nested = '{"a":' * depth + "1" + "}" * depth
    with pytest.raises(InvalidEvent, match="field 'evidence' is JSON nested too deeply"):
        parse("promotions", {**VALID["promotions"], "evidence": nested})


@pytest.mark.parametrize("field", ["service", "digest", "status", "event_id", "kind", "image"])
def test_a_megabyte_value_is_quoted_by_a_short_prefix(field: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse("ci", {**VALID["ci"], field: "A" * (1 << 20)})
    reason = str(refused.value)
    assert len(reason) <= REASON_MAX and "(1048576 characters)" in reason
    assert re.search(rf"'A{{{QUOTE_MAX}}}'…", reason)
