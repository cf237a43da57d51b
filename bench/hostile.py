"""Hostile input: what scrubbing a long error and refusing a megabyte entry cost, each beside a
baseline measured in the same run (the URL pattern scrub_text used before, and moving the same
bytes through Redis with plain redis-py). `python -m bench.hostile` runs this section alone."""

from __future__ import annotations

import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# The pattern scrub_text used before issue 5: `\w+://` is tried at every letter of a long word.
OLD_URL_CREDENTIALS = re.compile(r"(\w+://)([^/@\s:]+(:[^/@\s]*)?)@")
OLD_SIZES = (5_000, 10_000, 20_000)
MIB = 1 << 20


def _median_ms(fn: Callable[[], Any], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def run(url: str, runs: int = 5) -> dict[str, Any]:
    from ferry.adapters.bus import Bus
    from ferry.runtime.dispatcher import Dispatcher
    from ferry.runtime.logging import configure, get_logger, scrub_text
    from ferry.runtime.settings import Settings
    from ferry.runtime.worker import WorkerContext
    from gate_evaluator.worker import WORKER

    scrub = []
    for size in (*OLD_SIZES, MIB):
        # A URL with credentials at the end, so that both patterns search the whole text.
        text = "A" * size + " https://user:pw@host"
        old = None
        if size in OLD_SIZES:
            old = _median_ms(lambda text=text: OLD_URL_CREDENTIALS.sub(r"\1***@", text), runs)
        scrub.append(
            {"size": size, "old": old, "new": _median_ms(lambda t=text: scrub_text(t), runs)}
        )

    configure("CRITICAL", "json")  # the refusal's log line is not what is measured
    settings = Settings(redis_url=url, stream_prefix="bhostile:", consumer="bench")
    bus = Bus(settings, url)
    r = bus.redis
    ctx = WorkerContext(name="gate-evaluator", settings=settings, bus=bus, log=get_logger())
    dispatcher = Dispatcher(WORKER, ctx)
    stream = bus.stream("ci")
    bus.ensure_group("ci", "gate-evaluator")
    entries = {
        "1 MiB service name": {b"kind": b"ci", b"service": b"A" * MIB, b"digest": b"sha256:0"},
        "1 MiB field name, not UTF-8": {b"\xff" * MIB: b"x"},
        "JSON nested 100,000 deep": {b"json": b"[" * 100_000 + b"]" * 100_000},
        "small invalid entry": {b"kind": b"ci", b"service": b"API", b"digest": b"api:latest"},
    }
    refusals = []
    for label, raw in entries.items():
        samples, bare = [], []
        for _ in range(runs):
            entry_id = r.xadd(stream, raw).decode()
            r.xreadgroup("gate-evaluator", "bench", {stream: ">"}, count=1)
            t = time.perf_counter()
            outcome = dispatcher.process("ci", entry_id, raw, 1)
            samples.append((time.perf_counter() - t) * 1000)
            assert outcome == "dead", outcome
            # Baseline: the same bytes written to another stream and acknowledged, nothing else.
            t = time.perf_counter()
            with r.pipeline(transaction=True) as pipe:
                pipe.xadd("bhostile:bare", raw)
                pipe.xack(stream, "gate-evaluator", entry_id)
                pipe.execute()
            bare.append((time.perf_counter() - t) * 1000)
        refusals.append(
            {
                "entry": label,
                "dispatch": statistics.median(samples),
                "bare": statistics.median(bare),
            }
        )
    for key in r.scan_iter(match="bhostile:*"):
        r.delete(key)
    return {"runs": runs, "scrub": scrub, "refusals": refusals}


def render(res: dict[str, Any]) -> list[str]:
    out = ["## Hostile input\n"]
    out.append(
        f"Medians of {res['runs']} runs. `scrub_text` on a run of letters followed by a URL with "
        "credentials (a validation error that repeated a bad value looked like this), beside the "
        "URL pattern it used before:\n"
    )
    out.append("| characters | old pattern, ms | scrub_text, ms |")
    out.append("|---:|---:|---:|")
    for row in res["scrub"]:
        old = f"{row['old']:.1f}" if row["old"] is not None else "(not run: minutes)"
        out.append(f"| {row['size']:,} | {old} | {row['new']:.2f} |")
    out.append(
        "\nOne bad entry refused by gate-evaluator's dispatcher (decode, scrub, validate, dead "
        "letter with the whole payload, ack), beside writing the same bytes to a stream and "
        "acknowledging them with plain redis-py:\n"
    )
    out.append("| entry | dispatcher, ms | bare XADD + XACK, ms |")
    out.append("|---|---:|---:|")
    for row in res["refusals"]:
        out.append(f"| {row['entry']} | {row['dispatch']:.1f} | {row['bare']:.1f} |")
    out.append("")
    return out


def main() -> int:
    import os

    from ferry.adapters.embedded import start_server

    server = start_server()
    try:
        print("\n".join(render(run(server.connection_url))))
        print(f"(1-minute load average: {os.getloadavg()[0]:.2f})", file=sys.stderr)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
