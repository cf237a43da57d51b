"""The CPU cost of one gate-evaluator decision, in this process: gate-evaluator's `Dispatcher`
behind a loop that reads as Ferry's own reader does (`StreamReader`: COUNT entries per read,
each read handed to the dispatcher in the reading thread, the next read riding with its first
round trip and its XACK with the next read's first),
on the entries of bench.throughput ('skip': green CI in dev for the digest staging already
pins; 'failure': failed builds), on the same embedded server as the other benchmarks.

`python -m bench.decision` prints, per mode and read count, the Python CPU time (process time:
the server is another process) and the wall time per entry, and with --profile the functions
that cost the most (cProfile, per entry). Figures only compare within one run: the machine may
be shared."""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import throughput
from bench.env import Site, services


def drain(site: Site, dispatcher: Any, short: str, count: int) -> int:
    """Handle every new entry of stream SHORT as Ferry's reader would, COUNT per read."""
    from ferry.runtime.consumer import _new_entries

    bus = site.bus
    group = dispatcher.spec.name
    stream = bus.stream(short)
    n = 0
    ahead: list[Any] = []
    early = dispatcher.spec.read_count > 1
    with bus.deferring():
        while True:
            entries = ahead or _new_entries(
                bus.redis.xreadgroup(group, "decision", {stream: ">"}, count=count)
            )
            if not entries:
                return n
            with bus.reading_ahead(short, group, count, lambda: True, early=early) as answers:
                dispatcher.process_batch(short, entries)
            n += len(entries)
            ahead = [e for answer in answers for e in _new_entries(answer)]


def gate_dispatcher(url: str, prefix: str, folder: Path, names: list[str]) -> tuple[Site, Any]:
    """A scaffolded site for NAMES (staging pinning each one's digest) under stream PREFIX, and
    gate-evaluator's Dispatcher on it in this process, as consumer "decision", logging warnings
    only."""
    import structlog

    from ferry.runtime.dispatcher import Dispatcher
    from ferry.runtime.logging import get_logger
    from ferry.runtime.worker import WorkerContext
    from gate_evaluator.worker import WORKER

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    site = Site(url, prefix, folder)
    site.scaffold(names)
    throughput.pin_staging(site, names)
    site.settings.consumer = "decision"
    ctx = WorkerContext(
        name="gate-evaluator", settings=site.settings, bus=site.bus, log=get_logger()
    )
    return site, Dispatcher(WORKER, ctx)


def measure(
    url: str, root: Path, modes: list[str], counts: list[int], n: int, top: int, rounds: int = 1
) -> list[dict[str, Any]]:
    names = services(40)
    site, dispatcher = gate_dispatcher(url, "bdc:", root / "decision", names)
    stream = site.bus.stream("ci")
    out = []
    for mode in modes:
        entries = throughput.entries_for(mode, names, n)
        for count in counts:
            cpu_runs: list[float] = []
            wall_runs: list[float] = []
            for label in ("warm", *["timed"] * rounds, "profiled"):
                if label == "profiled" and not top:
                    continue
                site.r.delete(stream)
                throughput.publish_all(site.r, stream, entries)
                site.bus.ensure_group("ci", "gate-evaluator")
                prof = cProfile.Profile(time.thread_time) if label == "profiled" else None
                c0, w0 = time.process_time(), time.perf_counter()
                if prof:
                    prof.enable()
                done = drain(site, dispatcher, "ci", count)
                if prof:
                    prof.disable()
                cpu, wall = time.process_time() - c0, time.perf_counter() - w0
                assert done == n, (done, n)
                if label == "timed":
                    cpu_runs.append(cpu / n * 1e6)
                    wall_runs.append(wall / n * 1e6)
                if label == "timed" and len(cpu_runs) == rounds:
                    out.append(
                        {
                            "mode": mode,
                            "count": count,
                            "n": n,
                            "cpu_us": min(cpu_runs),
                            "cpu_median_us": statistics.median(cpu_runs),
                            "wall_us": min(wall_runs),
                        }
                    )
                if prof:
                    text = io.StringIO()
                    stats = pstats.Stats(prof, stream=text)
                    stats.sort_stats("tottime").print_stats(top)
                    stats.sort_stats("cumulative").print_stats(top)
                    out[-1]["profile"] = text.getvalue()
    site.r.delete(stream)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.decision", description=__doc__)
    p.add_argument("--n", type=int, default=3000, help="entries per measurement (3000)")
    p.add_argument("--mode", action="append", choices=sorted(throughput.MODES), default=None)
    p.add_argument("--count", action="append", type=int, default=None, help="read count (1)")
    p.add_argument("--profile", type=int, default=0, metavar="TOP", help="print TOP functions")
    p.add_argument("--rounds", type=int, default=1, help="timed passes; the least is shown (1)")
    args = p.parse_args(argv)
    from ferry.adapters.embedded import start_server

    server = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="ferry-bench-decision-") as tmp:
            rows = measure(
                server.connection_url,
                Path(tmp),
                args.mode or ["skip"],
                args.count or [1],
                args.n,
                args.profile,
                args.rounds,
            )
    finally:
        server.stop()
    load = Path("/proc/loadavg").read_text().split(" ")[0]
    for row in rows:
        print(row.pop("profile", ""))
    for row in rows:
        print(
            f"{row['mode']:8} count {row['count']:3}: {row['cpu_us']:7.0f} us CPU "
            f"(median {row['cpu_median_us']:.0f}), {row['wall_us']:7.0f} us wall per entry "
            f"(least of {args.rounds} passes of {row['n']} entries; load {load})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
