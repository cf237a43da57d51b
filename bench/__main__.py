"""`python -m bench`: run Ferry's benchmarks, print the report, write bench/RESULTS.md."""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

from bench import (
    backlog,
    board,
    canary,
    forges,
    hostile,
    latency,
    micro,
    previews,
    scale,
    throughput,
)
from bench.env import machine, services, write_section
from bench.report import render


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a shorter run (smaller counts)")
    p.add_argument("--events", type=int, help="latency: CI events = services (default 40)")
    p.add_argument("--rate", type=float, default=10.0, help="latency: events per second")
    p.add_argument(
        "--slow-events",
        type=int,
        help="latency: extra events sent one at a time afterwards (default 10)",
    )
    p.add_argument(
        "--slow-rate",
        type=float,
        default=2.0,
        help="latency: rate of the extra events (default 2/s)",
    )
    p.add_argument("--git-runs", type=int, help="latency baseline: bare git runs (default 30)")
    p.add_argument("--entries", type=int, help="throughput: backlog entries (default 2000)")
    p.add_argument("--canaries", type=int, help="canary rollbacks measured (default 10)")
    p.add_argument("--micro", type=int, help="calls per microbenchmark (default 200)")
    p.add_argument(
        "--backlog", type=int, help="(b') backlog entries and CI events replayed (default 100,000)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "RESULTS.md",
        help="where to write the results (default bench/RESULTS.md)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.events = args.events or (20 if quick else 40)
    if args.slow_events is None:
        args.slow_events = 5 if quick else 10
    args.git_runs = args.git_runs or (10 if quick else 30)
    args.entries = args.entries or (400 if quick else 2000)
    args.micro = args.micro or (60 if quick else 200)
    args.canaries = args.canaries or (4 if quick else 10)
    args.backlog = args.backlog or (5000 if quick else 100_000)
    for name in ("events", "git_runs", "entries", "micro", "canaries", "backlog"):
        if getattr(args, name) < 2:
            p.error(f"--{name.replace('_', '-')} must be at least 2")
    if args.rate <= 0 or args.slow_rate <= 0:
        p.error("--rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from ferry.adapters.embedded import start_server

    def step(text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    t_all = time.perf_counter()
    server = start_server()
    try:
        url = server.connection_url
        import redis

        info = redis.Redis.from_url(url).info("server")
        command = " ".join([".venv/bin/python -m bench", *map(shlex.quote, argv)])
        results: dict = {"machine": machine(info), "args": vars(args).copy(), "command": command}
        with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
            root = Path(tmp)
            names = services(args.events)
            step(f"(a) latency: {args.events} services, {args.rate:g} CI results/s")
            results["latency"] = latency.run_ferry(
                url, root, args.events, args.rate, args.slow_events, args.slow_rate
            )
            step(
                f"(a) latency: {args.events} services, {args.rate:g} CI results/s, "
                "2 pr-writer replicas"
            )
            results["latency2"] = latency.run_ferry(url, root, args.events, args.rate, pr_writers=2)
            step(f"(a) baseline: bare git promotion x{args.git_runs}")
            results["bare_git"] = latency.run_bare_git(root, args.events, args.git_runs)
            results["throughput"] = {}
            results["bare_loop"] = {}
            for mode in throughput.MODES:
                step(f"(b) throughput: {args.entries} entries, mode {mode}")
                run = throughput.run_ferry(url, root, mode, names, args.entries)
                results["throughput"][mode] = run
                step(f"(b) baseline: bare redis-py loop, mode {mode}")
                results["bare_loop"][mode] = throughput.run_bare(
                    redis.Redis.from_url(url), mode, run["entries_fields"]
                )
            step("microbenchmarks: gate-evaluator parts")
            tp = results["throughput"]
            results["micro"] = micro.gate_evaluator_parts(
                url,
                tp["skip"]["site"].repo_path,
                root / "micro-home",
                tp["failure"]["entries_fields"],
                tp["skip"]["entries_fields"],
                args.micro,
            )
            step("microbenchmarks: FastStream no-op consumer")
            results["faststream"] = micro.faststream_noop(
                url, tp["failure"]["entries_fields"][: max(2, min(args.entries, 1000))]
            )
            step(f"(c) canary rollback x{args.canaries}")
            results["canary"] = canary.run(url, root, args.canaries)
            step("microbenchmarks: pr-writer steps")
            results["pr_parts"] = micro.pr_writer_parts(
                url, root, args.events, 4 if args.quick else 10
            )
            step("hostile input: scrubbing and refusing a megabyte")
            results["hostile"] = hostile.run(url)
            n_previews = 200 if args.quick else 1000
            step(f"preview reaping: {n_previews} previews, 2 preview-reaper replicas")
            results["previews"] = previews.run(url, root, n_previews)
            step("(f) forge requests per promotion: github, gitea, gitlab on the fake forge")
            forge_rows = forges.run(url, root, 5 if args.quick else 10)
            step("the board: a page among 1,000 services; approval -> cell in Chromium")
            results["board"] = board.run(url, root)
            step(f"(b') one at a time, a backlog of {args.backlog}, a replay of as many")
            results["backlog"] = backlog.run(
                url,
                root,
                one=args.entries,
                backlog=args.backlog,
                replay=args.backlog,
                runs=2 if args.quick else 3,
                step=step,
            )
            step("(p) pr-writer promotions/s; (s) flat cost at 10 to 10,000 services")
            results["scale"] = scale.run(url, root, scale.options(args.quick))
        results["elapsed_s"] = time.perf_counter() - t_all
    finally:
        server.stop()
    text = (
        render(results).rstrip("\n")
        + "\n\n"
        + forges.render(forge_rows)
        + "\n"
        + board.report(results["board"])
    )
    print(text)
    args.out.write_text(text)
    section = backlog.render(results["backlog"], results["machine"], command)
    write_section(section, args.out, backlog.MARK_BEGIN, backlog.MARK_END)
    section = scale.render(results["scale"], results["machine"], command)
    write_section(section, args.out, scale.MARK_BEGIN, scale.MARK_END)
    step(f"wrote {args.out} ({results['elapsed_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
