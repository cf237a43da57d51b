"""docs/asyncapi/ is the AsyncAPI document generated from the workers' FastStream brokers: it is
up to date, and it describes Ferry's events on every stream a worker reads, not bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ferry.core.events import MODELS
from ferry.runtime import asyncapi
from ferry.runtime.runner import load_worker, worker_names
from tests.helpers import run_cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "asyncapi"


def test_committed_document_is_the_generated_one() -> None:
    committed = (DOCS / asyncapi.FILE).read_text(encoding="utf-8")
    assert committed == asyncapi.render(), (
        f"docs/asyncapi/{asyncapi.FILE} is stale: run `make asyncapi` "
        "(or `ferry docs asyncapi --out docs/asyncapi`) and commit the result"
    )


def test_the_document_ignores_this_machines_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = asyncapi.render()
    monkeypatch.setenv("FERRY_READ_COUNT", "7")
    monkeypatch.setenv("FERRY_STREAM_PREFIX", "staging:")
    monkeypatch.setenv("FERRY_CONSUMER", "host-1")
    assert asyncapi.render() == expected
    assert "staging:" not in expected and "host-1" not in expected


def test_every_stream_a_worker_reads_carries_its_event_schema() -> None:
    doc = asyncapi.document()
    assert doc["asyncapi"] == "3.0.0"
    schemas = doc["components"]["schemas"]
    messages = doc["components"]["messages"]
    expected = {
        (f"ferry:{short}", name) for name in worker_names() for short in load_worker(name).handlers
    }
    assert ("ferry:ci", "gate-evaluator") in expected
    assert ("ferry:promotions", "pr-writer") in expected
    seen = set()
    for channel in doc["channels"].values():
        binding = channel["bindings"]["redis"]
        assert binding["method"] == "xreadgroup"
        seen.add((channel["address"], binding["groupName"]))
        [ref] = channel["messages"].values()
        message = messages[ref["$ref"].rsplit("/", 1)[-1]]
        model = MODELS[channel["address"].removeprefix("ferry:")]
        assert message["payload"] == {"$ref": f"#/components/schemas/{model.__name__}"}
        schema = schemas[model.__name__]
        assert set(schema["properties"]) == set(model.model_fields)
        required = {n for n, f in model.model_fields.items() if f.is_required()}
        assert set(schema.get("required", [])) == required
    # one channel per stream and group: the reclaiming subscriber is the same channel
    assert seen == expected
    ci = schemas["CiResult"]["properties"]
    assert ci["digest"]["pattern"] == "^sha256:[0-9a-f]{64}$"
    assert ci["service"]["maxLength"] == 63


def test_cli_check_names_the_fixing_command(tmp_path: Path, capsys: Any) -> None:
    code, _, err = run_cli(capsys, "docs", "asyncapi", "--check", "--out", str(tmp_path))
    assert code == 2 and "is stale: run `ferry docs asyncapi --out" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = run_cli(capsys, "docs", "asyncapi", "--out", str(tmp_path))
    assert code == 0, err
    assert json.loads((tmp_path / asyncapi.FILE).read_text())["info"]["title"] == "Ferry"
    code, out, _ = run_cli(capsys, "docs", "asyncapi", "--check", "--out", str(tmp_path))
    assert code == 0 and "up to date" in out
