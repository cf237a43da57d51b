"""The board's query: whatever a browser sends, it parses or is refused with BadQuery (a 400),
never another error (a 500)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ferry.app.board import BadQuery, Query

keys = st.sampled_from(["q", "page", "per_page", "sort", ""])
params = st.dictionaries(keys, st.lists(st.text(max_size=30), min_size=1, max_size=3))


@given(params)
def test_any_query_parses_or_is_refused_in_words(raw: dict[str, list[str]]) -> None:
    try:
        query = Query.parse(raw)
    except BadQuery as e:
        assert str(e) and "\n" not in str(e)
        return
    assert 1 <= query.page and 1 <= query.per_page <= 100
    assert Query.parse(_as_params(query.as_params())) == query


def _as_params(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for pair in filter(None, text.split("&")):
        key, _, value = pair.partition("=")
        found.setdefault(key, []).append(value)
    return found


def test_defaults_and_limits() -> None:
    assert Query.parse({}) == Query(q="", page=1, per_page=50)
    assert Query.parse({"q": ["pay"], "page": ["3"], "per_page": ["100"]}).page == 3
    for bad in ({"page": ["1.5"]}, {"per_page": ["101"]}, {"q": ["Pay"]}, {"q": ["a b"]}):
        try:
            Query.parse(bad)
        except BadQuery:
            continue
        raise AssertionError(f"accepted {bad}")
