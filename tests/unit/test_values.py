"""The one-line digest edit: byte-for-byte expectations and refusals."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ferry.core.values import ValuesError, read_value, set_digest

OLD = "sha256:" + "0" * 64
NEW = "sha256:" + "4f1c" * 16
KEY = "image.digest"


def changed_lines(before: str, after: str) -> int:
    a, b = before.split("\n"), after.split("\n")
    assert len(a) == len(b)
    return sum(1 for x, y in zip(a, b, strict=True) if x != y)


def check(before: str, old_written: str, new_written: str, key: str = KEY) -> str:
    """set_digest replaces exactly OLD_WRITTEN (once) by NEW_WRITTEN, and nothing else."""
    assert before.count(old_written) == 1
    after = set_digest(before, key, NEW)
    assert after == before.replace(old_written, new_written)
    assert changed_lines(before, after) == 1
    assert read_value(after, key) == NEW
    return after


# ---------------------------------------------------------------------------- edits


def test_design_example_plain_value_with_comments() -> None:
    text = (
        "# envs/staging/api/values.yaml\n"
        "image:\n"
        "  repository: registry.example.com/shop/api   # never changes per environment\n"
        f"  digest: {OLD}                     # the only line ferry writes\n"
        "replicas: 3                                  # ferry never touches them\n"
    )
    check(text, f"digest: {OLD} ", f"digest: {NEW} ")


def test_comments_everywhere_survive() -> None:
    text = (
        "# head comment\n"
        "\n"
        "image:   # the image\n"
        "  # before repository\n"
        "  repository: r  # repo\n"
        "  # before digest\n"
        f"  digest: {OLD}# not a comment?\n"
        "  # after digest\n"
        "# trailing\n"
    )
    # '#' without a space before it is part of a plain scalar: that is a different value.
    assert read_value(text, KEY) == f"{OLD}# not a comment?"
    text = text.replace("# not a comment?", "  # a comment")
    check(text, OLD, NEW)


def test_double_quotes_are_kept() -> None:
    text = f'image:\n  repository: r\n  digest: "{OLD}"  # pinned\n'
    check(text, f'"{OLD}"', f'"{NEW}"')


def test_single_quotes_are_kept() -> None:
    text = f"image:\n  digest: '{OLD}' # pinned\n  repository: r\n"
    check(text, f"'{OLD}'", f"'{NEW}'")


def test_empty_double_quoted_digest_is_replaced() -> None:
    text = 'image:\n  repository: r\n  digest: ""   # nothing promoted yet\nreplicas: 1\n'
    check(text, 'digest: ""', f'digest: "{NEW}"')


def test_empty_single_quoted_digest_is_replaced() -> None:
    check("image:\n  digest: ''\n", "''", f"'{NEW}'")


@pytest.mark.parametrize("null", ["~", "null", "Null"])
def test_null_digest_is_replaced(null: str) -> None:
    text = f"image:\n  digest: {null}  # none yet\nother: 1\n"
    check(text, f"digest: {null} ", f"digest: {NEW} ")


def test_bare_key_without_value_is_filled_on_its_own_line() -> None:
    text = "image:\n  digest:\n  repository: r\n"
    check(text, "digest:\n", f"digest: {NEW}\n")
    text = "image:\n  digest:   # nothing yet\n  repository: r\n"
    check(text, "digest:   #", f"digest: {NEW}   #")


def test_anchors_and_merge_keys_elsewhere() -> None:
    text = (
        "common: &c {pullPolicy: IfNotPresent, port: 8080}\n"
        "image:\n"
        "  <<: *c\n"
        "  repository: r\n"
        f"  digest: {OLD}\n"
        "sidecar:\n"
        "  <<: *c\n"
        "  digest: sha256:" + "1" * 64 + "\n"
    )
    check(text, OLD, NEW)


def test_flow_map_plain() -> None:
    text = f"image: {{repository: r, digest: {OLD}, pullPolicy: Always}}\nreplicas: 2\n"
    check(text, OLD, NEW)


def test_flow_map_double_quoted() -> None:
    text = f'image: {{repository: r, digest: "{OLD}"}}  # flow\n'
    check(text, f'"{OLD}"', f'"{NEW}"')


def test_crlf_line_endings() -> None:
    text = f'# c\r\nimage:\r\n  repository: r\r\n  digest: "{OLD}" # x\r\nreplicas: 1\r\n'
    after = check(text, OLD, NEW)
    assert after.count("\r\n") == text.count("\r\n")


def test_no_trailing_newline() -> None:
    text = f"image:\n  repository: r\n  digest: {OLD}"
    after = check(text, OLD, NEW)
    assert not after.endswith("\n")


def test_document_start_marker() -> None:
    text = f"---\n# values\nimage:\n  digest: '{OLD}'\n"
    check(text, OLD, NEW)
    text = f"%YAML 1.2\n---\nimage:\n  digest: {OLD}\n...\n"
    check(text, OLD, NEW)


def test_indentation_of_four() -> None:
    text = f"image:\n    repository: r\n    digest: {OLD}\nresources:\n    limits: {{cpu: 1}}\n"
    check(text, OLD, NEW)


def test_deeper_and_custom_key() -> None:
    text = f"app:\n  containers:\n    main:\n      imageDigest: {OLD}\n"
    check(text, OLD, NEW, key="app.containers.main.imageDigest")


def test_same_value_elsewhere_is_not_touched() -> None:
    text = f"previous: {OLD}\nimage:\n  digest: {OLD}\n"
    after = set_digest(text, KEY, NEW)
    assert after == f"previous: {OLD}\nimage:\n  digest: {NEW}\n"


def test_unicode_before_the_value() -> None:
    text = f"# Zürich ☃ team\nimage:\n  note: 'naïve'\n  digest: {OLD}\n"
    check(text, OLD, NEW)


# ---------------------------------------------------------------------------- refusals


def refuse(text: str, *fragments: str, key: str = KEY) -> None:
    with pytest.raises(ValuesError) as info:
        set_digest(text, key, NEW, source="envs/prod/api/values.yaml")
    message = str(info.value)
    assert "envs/prod/api/values.yaml" in message
    for fragment in fragments:
        assert fragment in message


def test_missing_key_is_refused() -> None:
    refuse("image:\n  repository: r\n", "image.digest not found", "ferry never adds keys")
    refuse("replicas: 1\n", "image.digest not found")
    refuse("", "not found")
    refuse("image: registry/r\n", "not found")


def test_alias_value_is_refused() -> None:
    refuse(
        f"pin: &d {OLD}\nimage:\n  digest: *d\n",
        "image.digest is an anchor/alias",
        "more than one value",
    )


def test_anchored_value_is_refused() -> None:
    refuse(f"image:\n  digest: &d {OLD}\nother: *d\n", "anchor/alias")


def test_anchored_parent_is_refused() -> None:
    refuse(f"image: &i\n  digest: {OLD}\nsidecar: *i\n", "anchor/alias")


def test_value_from_merge_key_is_refused() -> None:
    refuse(f"base: &b {{digest: {OLD}}}\nimage:\n  <<: *b\n", "anchor/alias")


def test_block_scalar_is_refused() -> None:
    refuse(f"image:\n  digest: |\n    {OLD}\n", "block scalar")
    refuse(f"image:\n  digest: >-\n    {OLD}\n", "block scalar")


def test_multi_line_scalar_is_refused() -> None:
    refuse(f'image:\n  digest: "sha256:\n    {OLD[7:]}"\n', "several lines")
    refuse("image:\n  digest: not\n    yet\n", "several lines")


def test_non_string_values_are_refused() -> None:
    refuse("image:\n  digest: {a: 1}\n", "mapping")
    refuse("image:\n  digest: [a]\n", "list")
    refuse("image:\n  digest: 12\n", "not a string")
    refuse("image:\n  digest: true\n", "not a string")


def test_tagged_value_is_refused() -> None:
    refuse(f"image:\n  digest: !!str {OLD}\n", "image.digest")


def test_invalid_yaml_and_bad_digest_are_refused() -> None:
    refuse("image: [\n", "not valid YAML")
    with pytest.raises(ValuesError, match="sha256"):
        set_digest(f"image:\n  digest: {OLD}\n", KEY, "latest")


def test_same_digest_is_a_no_op() -> None:
    text = f"image:\n  digest: {OLD}\n"
    assert set_digest(text, KEY, OLD) == text


def test_read_value() -> None:
    text = f"image:\n  repository: r\n  digest: '{OLD}'\n"
    assert read_value(text, KEY) == OLD
    assert read_value(text, "image.repository") == "r"
    assert read_value(text, "image.tag") is None
    assert read_value(text, "nope.digest") is None
    assert read_value("image:\n  digest:\n", KEY) is None
    assert read_value('image:\n  digest: ""\n', KEY) == ""
    assert read_value("", KEY) is None
    with pytest.raises(ValuesError):
        read_value("image:\n  digest: [1]\n", KEY)


# ---------------------------------------------------------------------------- property

digests = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(
    lambda h: "sha256:" + h
)
comments = st.sampled_from(["", "  # pinned by ferry", " #x", "    # ☃ ünïcode"])
quotes = st.sampled_from(["", '"', "'"])
indents = st.sampled_from([2, 4])
newlines = st.sampled_from(["\n", "\r\n"])


@settings(max_examples=150, deadline=None)
@given(
    old=digests,
    new=digests,
    comment=comments,
    quote=quotes,
    indent=indents,
    nl=newlines,
    flow=st.booleans(),
    trailing=st.booleans(),
    header=st.booleans(),
)
def test_exactly_one_line_changes(
    old: str,
    new: str,
    comment: str,
    quote: str,
    indent: int,
    nl: str,
    flow: bool,
    trailing: bool,
    header: bool,
) -> None:
    assume(old != new)
    pad = " " * indent
    written = f"{quote}{old}{quote}"
    lines = ["---", "# values"] if header else []
    if flow:
        lines += [f"image: {{repository: r, digest: {written}}}{comment}"]
    else:
        lines += ["image:", f"{pad}repository: r  # repo", f"{pad}digest: {written}{comment}"]
    lines += [f"replicas: 3{comment}", f"previous: {written}"]
    text = nl.join(lines) + (nl if trailing else "")

    after = set_digest(text, KEY, new)

    assert changed_lines(text, after) == 1
    assert read_value(after, KEY) == new
    assert read_value(after, "previous") == old
    index = text.index(f"digest: {written}") + len("digest: ")
    assert after == text[:index] + f"{quote}{new}{quote}" + text[index + len(written) :]
