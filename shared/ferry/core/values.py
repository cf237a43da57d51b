"""The one-line edit: pin a digest in a Helm values file without touching anything else.

ruamel.yaml is used only to find where the value is written; the new value is spliced into the
original text, which is never re-dumped. The result is then checked: it parses to the same data
with only that key changed, and exactly one line differs. Anything that would need a wider edit
(aliases, block scalars, tags, a missing key) is refused with ValuesError.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

from .names import check_digest

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_NULL_SPELLINGS = {"", "~", "null", "Null", "NULL"}


class ValuesError(ValueError):
    """The values file cannot be edited safely (or read) at that key."""


def _split_key(dotted_key: str) -> list[str]:
    parts = dotted_key.split(".")
    if not dotted_key or any(not p for p in parts):
        raise ValuesError(f"bad key {dotted_key!r}: expected a dotted key such as image.digest")
    return parts


def _safe_load(text: str, where: str) -> Any:
    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise ValuesError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from None


def read_value(text: str, dotted_key: str, *, source: str = "values file") -> str | None:
    """The string at DOTTED_KEY, or None when the key (or its value) is absent."""
    return read_values(text, [dotted_key], source=source)[0]


def read_values(
    text: str, dotted_keys: list[str], *, source: str = "values file"
) -> list[str | None]:
    """read_value of each of DOTTED_KEYS, from one scan of TEXT (one parse when the scan is not
    sure of one of them)."""
    wanted = [tuple(_split_key(k)) for k in dotted_keys]
    found = _read_plain(text, wanted)
    if all(f is not _UNSURE for f in found):
        return found  # type: ignore[return-value]
    data: Any = _safe_load(text, source)
    out: list[str | None] = []
    for dotted_key, parts, plain in zip(dotted_keys, wanted, found, strict=True):
        if plain is not _UNSURE:
            out.append(plain)  # type: ignore[arg-type]
            continue
        node = data
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None and not isinstance(node, str):
            raise ValuesError(f"{source}: {dotted_key} is a {type(node).__name__}, not a string")
        out.append(node)
    return out


# A values file made only of comments and `key: scalar` / `key:` lines (the scaffold's shape) is
# read by a scan of its lines, about a hundred times faster than a YAML parse (`ferry status` reads
# every values file of every service). Anything else, and anything the scan is not sure of, goes
# to the YAML parser, so the answer is always the parser's.
_UNSURE = object()
_LINE = re.compile(
    r"""^(?P<indent> *)(?P<key>[A-Za-z0-9_][A-Za-z0-9_.-]*):"""
    r"""(?:[ ]+(?:"(?P<dq>[^"\\]*)"|'(?P<sq>[^']*)'|"""
    r"""(?P<plain>[A-Za-z0-9_./+][^\s#:]*(?::[^\s#]+)*)))?"""
    r"""[ ]*(?:[ ]\#.*)?$"""
)
_SURE_STRING = re.compile(r"^[A-Za-z][A-Za-z0-9_./:@+-]*$")
_NOT_STRINGS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n"}


def _read_plain(text: str, wanted: list[tuple[str, ...]]) -> list[object]:
    """read_value's answer for each key of WANTED (its parts), or _UNSURE, for a file of plain
    mapping lines (every answer is _UNSURE for any other file)."""
    unsure: list[object] = [_UNSURE] * len(wanted)
    if "\t" in text or "\r" in text or text.startswith("\ufeff"):
        return unsure
    # Open mappings, outermost first: [indent of their keys (None: not seen yet), their key].
    stack: list[list[Any]] = [[0, ""]]
    seen: set[tuple[str, ...]] = set()
    found: list[object] = [None] * len(wanted)  # absent unless a line says otherwise
    exact: dict[tuple[str, ...], list[int]] = {}  # a key's parts -> the keys it is
    above: dict[tuple[str, ...], list[int]] = {}  # a mapping on the way -> the keys below it
    for i, parts in enumerate(wanted):
        exact.setdefault(parts, []).append(i)
        for n in range(1, len(parts)):
            above.setdefault(parts[:n], []).append(i)
    opened = False  # the last line was `key:` with nothing after it
    last = ""
    for line in text.split("\n"):
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            return unsure
        indent = len(m["indent"])
        if opened:
            if indent <= stack[-1][0]:
                return unsure  # `key:` with nothing under it (null): the parser decides
            stack.append([indent, last])
        else:
            while len(stack) > 1 and indent < stack[-1][0]:
                stack.pop()
            if indent != stack[-1][0]:
                return unsure  # not aligned with its siblings
        keys = (*(k for _, k in stack[1:]), m["key"])
        if keys in seen:
            return unsure  # a duplicate key: the parser refuses it
        seen.add(keys)
        last = m["key"]
        quoted = m["dq"] if m["dq"] is not None else m["sq"]
        plain = m["plain"]
        opened = quoted is None and plain is None
        for i in exact.get(keys, ()):
            if opened:
                found[i] = _UNSURE
            elif plain is not None and (
                not _SURE_STRING.match(plain) or plain.lower() in _NOT_STRINGS
            ):
                found[i] = _UNSURE  # a number, a boolean, a null...: the parser says
            else:
                found[i] = quoted if quoted is not None else plain
        if not opened:
            for i in above.get(keys, ()):
                found[i] = None  # a scalar where a mapping on the way was wanted: absent
    if opened:
        return unsure
    return found


def set_digest(text: str, dotted_key: str, digest: str, *, source: str = "values file") -> str:
    """Return TEXT with the scalar at DOTTED_KEY replaced by DIGEST, and nothing else changed.

    Exactly one line differs in the result (none if DIGEST is already pinned there). SOURCE
    names the file in error messages.
    """
    try:
        check_digest(digest, dotted_key)
    except ValueError as exc:
        raise ValuesError(f"{source}: {exc}") from None
    parts = _split_key(dotted_key)
    old_data = _safe_load(text, source)
    try:
        yaml = YAML(typ="rt", pure=True)
        root = yaml.compose(text)
        rt_data = YAML(typ="rt", pure=True).load(text)
    except YAMLError as exc:
        raise ValuesError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None

    key_node, value_node = _locate(root, parts, dotted_key, source)
    if (
        isinstance(value_node, ScalarNode)
        and value_node.tag == _STR
        and value_node.style not in ("|", ">")
        and value_node.value == digest
    ):
        return text  # already pinned: nothing to change
    line = value_node.start_mark.line + 1
    where = f"{source}:{line}"
    if not isinstance(value_node, ScalarNode):
        kind = "mapping" if isinstance(value_node, MappingNode) else "list"
        raise ValuesError(
            f"{where}: {dotted_key} is a {kind}, not a string: ferry will not replace it"
        )
    if value_node.tag not in (_STR, _NULL):
        raise ValuesError(f"{where}: {dotted_key} is not a string ({value_node.value!r})")
    if value_node.style in ("|", ">"):
        raise ValuesError(
            f"{where}: {dotted_key} is a block scalar spanning several lines: write it on one line"
        )

    start, end = value_node.start_mark.index, value_node.end_mark.index
    if start == end:
        # `digest:` with nothing after the colon: insert after the colon of the key.
        colon = _colon_after(text, key_node.end_mark.index)
        if colon is None:
            raise ValuesError(f"{where}: cannot find where {dotted_key} is written")
        start = end = colon + 1
        replacement = " " + digest
        where = f"{source}:{key_node.end_mark.line + 1}"
    else:
        # Cross-check the location with the round-trip loader's own record of the value.
        parent = _walk_rt(rt_data, parts[:-1])
        lc = _lc_value(parent, parts[-1])
        if lc is not None and lc != (value_node.start_mark.line, value_node.start_mark.column):
            raise ValuesError(f"{where}: cannot locate {dotted_key} precisely; edit it by hand")
        raw = text[start:end]
        if "\n" in raw or "\r" in raw or value_node.start_mark.line != value_node.end_mark.line:
            raise ValuesError(f"{where}: {dotted_key} spans several lines: write it on one line")
        quote = value_node.style if value_node.style in ('"', "'") else ""
        if quote:
            if len(raw) < 2 or raw[0] != quote or raw[-1] != quote:
                raise ValuesError(f"{where}: cannot locate {dotted_key} precisely (tag?)")
        elif raw != value_node.value or (value_node.tag == _NULL and raw not in _NULL_SPELLINGS):
            raise ValuesError(f"{where}: cannot locate {dotted_key} precisely (tag?)")
        replacement = f"{quote}{digest}{quote}"

    new_text = text[:start] + replacement + text[end:]
    _verify(text, new_text, old_data, parts, digest, dotted_key, where)
    return new_text


def _locate(root: Node | None, parts: list[str], dotted_key: str, source: str) -> tuple[Node, Node]:
    missing = ValuesError(
        f"{source}: {dotted_key} not found: add it to the values file first; ferry never adds keys"
    )
    if root is None:
        raise missing
    node: Node = root
    key_node: Node | None = None
    for part in parts:
        if _anchored(node):
            raise _alias_error(source, key_node or node, dotted_key)
        if not isinstance(node, MappingNode):
            raise missing
        found = [
            (k, v)
            for k, v in node.value
            if isinstance(k, ScalarNode) and k.value == part and k.tag == _STR
        ]
        if not found:
            if any(
                isinstance(k, ScalarNode) and k.tag == "tag:yaml.org,2002:merge"
                for k, _ in node.value
            ):
                raise _alias_error(source, node, dotted_key)
            raise missing
        key_node, node = found[-1]
    if _anchored(node):
        raise _alias_error(source, key_node or node, dotted_key)
    assert key_node is not None
    return key_node, node


def _anchored(node: Node) -> bool:
    return getattr(node, "anchor", None) is not None


def _alias_error(source: str, node: Node, dotted_key: str) -> ValuesError:
    return ValuesError(
        f"{source}:{node.start_mark.line + 1}: {dotted_key} is an anchor/alias "
        f"(or merged from one): ferry will not change more than one value"
    )


def _colon_after(text: str, index: int) -> int | None:
    i = index
    while i < len(text) and text[i] in " \t":
        i += 1
    return i if i < len(text) and text[i] == ":" else None


def _walk_rt(data: Any, parts: list[str]) -> Any:
    for part in parts:
        data = data[part]
    return data


def _lc_value(parent: Any, key: str) -> tuple[int, int] | None:
    if not isinstance(parent, CommentedMap):
        return None
    try:
        line, col = parent.lc.value(key)
    except (KeyError, TypeError, AttributeError):
        return None
    return line, col


def _verify(
    text: str,
    new_text: str,
    old_data: Any,
    parts: list[str],
    digest: str,
    dotted_key: str,
    where: str,
) -> None:
    old_lines, new_lines = text.split("\n"), new_text.split("\n")
    changed = sum(1 for a, b in zip(old_lines, new_lines, strict=False) if a != b)
    if len(old_lines) != len(new_lines) or changed != 1:
        raise ValuesError(f"{where}: editing {dotted_key} would change more than one line")
    expected = copy.deepcopy(old_data)
    target = expected
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = digest
    try:
        new_data = YAML(typ="safe", pure=True).load(new_text)
    except YAMLError:
        raise ValuesError(f"{where}: editing {dotted_key} would break the YAML") from None
    if new_data != expected:
        raise ValuesError(
            f"{where}: editing {dotted_key} would change other values: ferry will not do that"
        )
