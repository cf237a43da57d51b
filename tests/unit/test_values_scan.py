"""read_value answers plain values files by a scan of their lines (`ferry status` reads every
values file): the answer must always be the YAML parser's, or the scan must step aside. read_values
answers several keys from one scan: each answer must be read_value's."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.adapters.scaffold import render_files
from ferry.core.values import (
    _UNSURE,
    ValuesError,
    _read_plain,
    _safe_load,
    read_value,
    read_values,
)

D = "sha256:" + "a" * 64


def parsed(text: str, key: str) -> Any:
    """What the YAML parser alone says (read_value before the scan), or the error's type."""
    try:
        node: Any = _safe_load(text, "f")
    except ValuesError:
        return ValuesError
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if node is None or isinstance(node, str) else ValuesError


def agree(text: str, key: str) -> object:
    quick = _read_plain(text, [tuple(key.split("."))])[0]
    if quick is not _UNSURE:
        assert quick == parsed(text, key), (text, key)
    try:
        answer: Any = read_value(text, key, source="f")
    except ValuesError:
        answer = ValuesError
    assert answer == parsed(text, key), (text, key)
    return quick


SCAFFOLD = render_files(["api"], ["staging"], "registry.example.com/shop")[
    "envs/staging/api/values.yaml"
]

CASES = [
    SCAFFOLD,
    SCAFFOLD.replace('digest: ""', f'digest: "{D}"'),
    SCAFFOLD.replace('digest: ""', f"digest: '{D}'"),
    SCAFFOLD.replace('digest: ""', f"digest: {D}"),
    SCAFFOLD.replace('digest: ""', "digest:"),
    SCAFFOLD.replace('digest: ""', "digest: ~"),
    SCAFFOLD.replace('digest: ""', "digest: null"),
    SCAFFOLD.replace('digest: ""', "digest: true"),
    SCAFFOLD.replace('digest: ""', "digest: 12"),
    SCAFFOLD.replace('digest: ""', "digest: {a: 1}"),
    SCAFFOLD.replace('digest: ""', "digest: &x abc"),
    SCAFFOLD.replace('digest: ""', 'digest: "a\\"b"'),
    SCAFFOLD.replace('digest: ""', "digest: 'it''s'"),
    SCAFFOLD.replace('digest: ""', "digest: two words"),
    SCAFFOLD + f'  digest: "{D}"\n',  # a duplicate key under image (the parser refuses it)
    SCAFFOLD + f'image:\n  digest: "{D}"\n',  # a duplicate top-level key
    SCAFFOLD.replace("\n", "\r\n"),
    SCAFFOLD.replace("  ", "\t"),
    "image: plain\n",
    "image:\n  repository: r\n",
    "image:\n    digest: a\n  repository: r\n",  # misaligned siblings: not YAML
    "image:\n  digest: a\n    more: b\n",  # deeper under a scalar: not YAML
    "  image:\n    digest: abc\n",  # indented top level
    "---\nimage:\n  digest: abc\n",
    "image:\n  - digest: abc\n",
    "",
    "# only a comment\n",
    "image:\n  digest: abc # note\nreplicas: 2\n",
    "image:\n  digest: abc#not-a-comment\n",
    "image:\n\n  digest: abc\n",
    "image:\n# between\n  digest: abc\n",
    "other:\n  digest: x\nimage:\n  digest: abc\n",
]


@pytest.mark.parametrize("text", CASES)
@pytest.mark.parametrize("key", ["image.digest", "image.repository", "image", "replicas", "x.y"])
def test_scan_agrees_with_the_parser(text: str, key: str) -> None:
    agree(text, key)
    keys = [key, "image.repository", "a"]
    assert together(text, keys) == one_by_one(text, keys), text


def one_by_one(text: str, keys: list[str]) -> Any:
    """read_value of each of KEYS, or ValuesError when any of them raises it."""
    try:
        return [read_value(text, k, source="f") for k in keys]
    except ValuesError:
        return ValuesError


def together(text: str, keys: list[str]) -> Any:
    try:
        return read_values(text, keys, source="f")
    except ValuesError:
        return ValuesError


@pytest.mark.parametrize("text", CASES)
def test_several_keys_read_in_one_scan_agree_with_each_read(text: str) -> None:
    keys = ["image.digest", "image.repository", "image", "replicas", "x.y"]
    assert together(text, keys) == one_by_one(text, keys), text
    assert together(text, keys[:2]) == one_by_one(text, keys[:2]), text


def test_the_scaffold_shape_is_scanned() -> None:
    """The scan answers the files Ferry scaffolds (else it would save nothing)."""
    assert agree(SCAFFOLD, "image.digest") == ""
    assert agree(SCAFFOLD.replace('digest: ""', f'digest: "{D}"'), "image.digest") == D
    assert agree(SCAFFOLD, "image.repository") == "registry.example.com/shop/api"


_key = st.sampled_from(["image", "digest", "repository", "a", "b"])
_value = st.sampled_from(
    ["", '""', f'"{D}"', f"'{D}'", D, "~", "null", "True", "2", "x y", "[1]", "&a b", "'q''q'"]
)
_line = st.tuples(st.sampled_from([0, 2, 4, 3]), _key, _value, st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(_line, max_size=8), st.sampled_from(["image.digest", "image", "a.b", "digest"]))
def test_scan_never_disagrees_with_the_parser(lines: list[Any], key: str) -> None:
    text = "".join(
        f"{' ' * indent}{k}:{(' ' + v) if v else ''}{'   # c' if comment else ''}\n"
        for indent, k, v, comment in lines
    )
    agree(text, key)
    keys = [key, "image.repository", "a"]
    assert together(text, keys) == one_by_one(text, keys), text
