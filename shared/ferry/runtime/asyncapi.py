"""The AsyncAPI document of Ferry's workers (docs/asyncapi/), generated from the FastStream broker
each worker runs (`consumer.build_broker`, the one `serve` starts): a channel per stream and
consumer group, its payload the stream's event model from core/events.py.
`ferry docs asyncapi` (or `make asyncapi`) writes it; a test fails when the committed one is
stale."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ferry.runtime.consumer import build_broker
from ferry.runtime.runner import load_worker, worker_names
from ferry.runtime.settings import Settings

FILE = "ferry.json"
# The document describes every deployment: the default stream prefix, and placeholders for
# what differs between them (the server, each replica's consumer name).
SERVER = "redis://localhost:6379"
CONSUMER = "<hostname>-<pid>"

DESCRIPTION = (
    "Ferry's workers and the Redis streams they read, one channel per stream and consumer "
    "group (the worker's name). Every entry is one event of core/events.py: one stream field "
    "per attribute (strings as they are, lists and mappings as JSON text, absent values left "
    "out), or the whole event as one JSON object in a field named `json`. Unknown fields are "
    "ignored. Delivery is at least once; effects are published once under keys derived from "
    "the promotion id. See docs/events.md for examples and docs/architecture.md for the flow."
)


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every worker's broker, as plain JSON values."""
    from faststream.specification import AsyncAPI

    # Defaults only: FERRY_* variables of the machine that writes the document stay out of it.
    settings = Settings.model_construct(stream_prefix="ferry:", consumer=CONSUMER)

    def unused(short: str) -> Any:
        async def handle(message: Any) -> None:  # never called: the broker never starts
            raise AssertionError("the documented broker is not started")

        return handle

    brokers = [
        build_broker(load_worker(name), settings, SERVER, unused)[0] for name in worker_names()
    ]
    spec = AsyncAPI(
        *brokers,
        title="Ferry",
        version=_version(),
        description=DESCRIPTION,
        schema_version="3.0.0",
    )
    return dict(spec.to_specification().to_jsonable())


def render() -> str:
    """The document as it is committed: JSON, two-space indents, keys sorted (FastStream's order
    of channels follows its subscribers' hashes, which differ between runs)."""
    return json.dumps(document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(directory: Path) -> Path:
    """Write the document into DIRECTORY; return the file written."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE
    path.write_text(render(), encoding="utf-8")
    return path


def _version() -> str:
    try:
        return version("ferry")
    except PackageNotFoundError:
        return "0.0.0"
