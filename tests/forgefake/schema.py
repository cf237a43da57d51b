"""Check an answer of the fake forge against a vendor's model generated from its API description."""

from __future__ import annotations

import re
import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from ferry.adapters.forge import MergeConflict, PullRequestNotFound
from ferry.adapters.forge.base import HeadMoved


def conforms(annotation: Any, value: Any, where: str) -> None:
    """VALUE fits ANNOTATION: for models, each field present must be a field of the model and fit
    its type (the fake sends a subset of GitHub's fields, never one GitHub does not have)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(annotation):
            try:
                conforms(option, value, where)
                return
            except (AssertionError, ValueError) as e:
                errors.append(str(e))
        raise AssertionError(f"{where}: {value!r} fits none of {annotation}: {errors}")
    if origin is list:
        assert isinstance(value, list), f"{where}: expected a list"
        for i, item in enumerate(value):
            conforms(typing.get_args(annotation)[0], item, f"{where}[{i}]")
        return
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        assert isinstance(value, dict), f"{where}: expected an object"
        fields = {(f.alias or name): f for name, f in annotation.model_fields.items()}
        for key, item in value.items():
            assert key in fields, (
                f"{where}.{key} is not a field of the vendor's {annotation.__name__}"
            )
            conforms(fields[key].annotation, item, f"{where}.{key}")
        return
    if annotation is typing.Any:
        return
    TypeAdapter(annotation).validate_python(value)


def template_of(endpoints: Any, method: str, path: str) -> str:
    """The vendor's path template (`/repos/{owner}/{repo}/pulls/{index}`) that PATH is."""
    matches = []
    for m, template in endpoints:
        pattern = re.sub(r"\\\{\w+\\\}", r"[^/]+", re.escape(template))
        if m == method and re.fullmatch(pattern, path):
            matches.append(template)
    assert matches, f"{method} {path} is not a route of the vendor's API"
    # /pulls/{index} and /pulls/{base}/{head} both match some paths: the more literal one wins
    return min(matches, key=lambda t: t.count("{"))


def exercise(under: Any) -> None:
    """Call every operation of the provider under test once, errors included."""
    forge, fake = under.forge, under.fake
    first = under.branch("one", "1\n")
    pr = under.open("one", key="k", labels=["ferry", "env/dev"])
    under.open("one", key="k")
    forge.comment(pr.number, "a comment")
    forge.update_body(pr.number, "another body")
    forge.add_labels(pr.number, ["preview"])
    forge.remove_label(pr.number, "preview")
    forge.set_status(pr.number, "ferry/gates", "pending", "approvals 0/1")
    fake.add_review(pr.number, "release-lead", "approved")
    forge.reviews(pr.number)
    forge.list_prs()
    under.branch("one", "2\n")
    with pytest.raises(HeadMoved):
        forge.merge_pr(pr.number, sha=first)
    forge.merge_pr(pr.number, message="Merge\n\nFerry-Digest: x")
    forge.merge_pr(pr.number)
    under.branch("two", "3\n", base=f"{first}~1")
    other = under.open("two")
    with pytest.raises(MergeConflict):
        forge.merge_pr(other.number)
    forge.close_pr(other.number, comment="closing")
    with pytest.raises(PullRequestNotFound):
        forge.get_pr(404)
