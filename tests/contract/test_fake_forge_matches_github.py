"""The fake forge's GitHub is checked against GitHub's own API description, as githubkit carries
it (its REST client and models are generated from GitHub's OpenAPI document): every route the
provider called exists with that method, every request body the provider sent validates against
GitHub's body model, every successful answer the fake gave matches the documented response model
field by field, and every error status it gave is one GitHub documents for that route."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.contract.conftest import Under
from tests.forgefake.schema import conforms, exercise, template_of

# a test dependency (pyproject's [test] extra): skipped without it, except in CI where it must run
githubkit_schemas = (
    importlib.import_module("githubkit_schemas.v2022_11_28")
    if os.environ.get("CI")
    else pytest.importorskip("githubkit_schemas.v2022_11_28")
)
from githubkit_schemas.v2022_11_28 import models  # noqa: E402

_ENDPOINT = re.compile(r'"""[\w/-]+\n\s+(GET|POST|PUT|PATCH|DELETE) (/\S+)\n')


def github_endpoints() -> dict[tuple[str, str], dict[str, Any]]:
    """(method, path template) -> body model, response model and documented error statuses."""
    rest = Path(githubkit_schemas.__file__).parent / "rest"
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for module in ("pulls", "issues", "repos"):
        source = (rest / f"{module}.py").read_text()
        for m in _ENDPOINT.finditer(source):
            key = (m[1], m[2])
            if key in out:
                continue  # the async twin
            end = source.find("\n    def ", m.end())
            chunk = source[m.end() : end if end > 0 else None]
            body = re.search(r"type_validate_python\(\s*(?:Union\[\s*)?(\w+)", chunk)
            response = re.search(r"response_model=([^,\n]+),", chunk)
            errors = re.search(r"error_models=\{(.*?)\}", chunk, re.S)
            out[key] = {
                "body": body[1] if body else None,
                "response": response[1].strip() if response else None,
                "errors": set(re.findall(r'"(\d{3})"', errors[1])) if errors else set(),
            }
    return out


def model(name: str) -> Any:
    m = re.fullmatch(r"list\[(\w+)\]", name)
    return list[getattr(models, m[1])] if m else getattr(models, name)  # type: ignore[misc]


@pytest.fixture
def github(under: Under) -> Under:
    if under.fake is None or under.fake.flavour != "github":
        pytest.skip("checks the github flavour of the fake")
    return under


@pytest.mark.parametrize("under", ["github"], indirect=True)
def test_fake_github_speaks_githubs_documented_api(github: Under) -> None:
    fake = github.fake
    assert fake is not None
    exercise(github)

    endpoints = github_endpoints()
    prefix = "/api/v3"
    seen = set()
    for r in [r for r in fake.requests if r["api"]]:
        path = r["path"][len(prefix) :]
        template = template_of(endpoints, r["method"], path)
        spec = endpoints[(r["method"], template)]
        seen.add((r["method"], template))
        where = f"{r['method']} {template}"
        if r["request"] is not None and spec["body"]:
            getattr(models, spec["body"]).model_validate(r["request"])  # the provider's request
        if r["status"] < 300:
            if spec["response"] and r["response"] is not None:
                conforms(model(spec["response"]), r["response"], where)
        else:
            assert str(r["status"]) in spec["errors"], f"{where}: {r['status']} is not documented"
    assert len(seen) >= 10  # the check covered the routes Ferry uses
