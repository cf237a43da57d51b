"""pr-writer throughput, and flat cost from 10 to 10,000 services (`python -m bench.scale`).

(p) promotions a second: N promotion commands (auto-merged, into dev) published at once to
    `ferry:promotions`, drained by one pr-writer process and by three replicas, on the local forge;
    beside the bare git sequence of one promotion (fetch, checkout, edit, commit, push; fetch,
    checkout, merge, push) in a loop, in the same run.
(s) flat cost: GitOps repositories with 10, 1,000 and 10,000 services x 3 environments, each
    measured the same way: one gate-evaluator draining CI entries spread over every service
    (per-event cost), one pr-writer promoting services spread over the repository (per-promotion
    cost), both processes' peak memory, and `ferry status` / `ferry explain` wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.env import (
    REGISTRY,
    Site,
    digest_of,
    id_ms,
    machine,
    wait_until,
    write_section,
)
from bench.latency import run_bare_git
from bench.throughput import pinned_digest, publish_all
from ferry.core.events import CiResult, PromotionCommand
from tests.helpers import open_in_dev

ENVS = ("dev", "staging", "prod")
MARK_BEGIN, MARK_END = "<!-- bench:scale begin -->", "<!-- bench:scale end -->"
DEFAULT_OUT = Path(__file__).parent / "RESULTS.md"


# ---------------------------------------------------------------------------- the repository


def make_repo(path: Path, names: list[str]) -> None:
    """A bare GitOps repository with the scaffold's files for NAMES (staging already pins a digest
    for every service), written by one `git fast-import` (scaffolding 30,000 files through a
    working tree takes a minute). Bare, as a forge's repository is: a non-bare one also updates its
    checkout on every merge."""
    from ferry.adapters.scaffold import render_files

    files = render_files(names, ENVS, REGISTRY)
    for s in names:
        key = f"envs/staging/{s}/values.yaml"
        files[key] = files[key].replace('  digest: ""', f'  digest: "{pinned_digest(s)}"', 1)
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    chunks = [b"commit refs/heads/main\n", b"committer Bench <bench@localhost> 0 +0000\n"]
    chunks.append(b"data 8\nscaffold\n")
    for relpath, content in files.items():
        data = content.encode()
        chunks.append(f"M 100644 inline {relpath}\ndata {len(data)}\n".encode() + data + b"\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=b"".join(chunks), check=True)


def _site(url: str, root: Path, tag: str, names: list[str]) -> Site:
    site = Site(url, f"bscale-{tag}:", root / f"scale-{tag}")
    site.repo_path = site.root / "gitops.git"
    site.settings = site.settings.model_copy(update={"gitops_repo": str(site.repo_path)})
    make_repo(site.repo_path, names)
    return site


def _peak_rss_mb(proc: subprocess.Popen[bytes]) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds the process used so far, its own and its git processes' (children it waited
    for): a cost the load of a shared machine changes far less than wall time."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _commands(names: list[str], tag: str, count: int | None = None) -> list[PromotionCommand]:
    """COUNT promotions into dev (default one per name), cycling over NAMES, each digest new."""
    out = []
    for i in range(count or len(names)):
        s = names[i % len(names)]
        out.append(open_in_dev(s, digest_of(f"{tag}-{i}-{s}")))
    return out


def _drain_promotions(site: Site, cmds: list[PromotionCommand], timeout: float) -> dict[str, Any]:
    """Publish CMDS at once; wait for every pr_merged; the rate from the server clock."""
    for cmd in cmds:
        site.bus.publish(cmd)
    want = len(cmds)

    def merged() -> list[tuple[str, dict[str, str]]]:
        found = [(i, f) for i, f in site.entries("changes") if f.get("kind") == "pr_merged"]
        return found if len(found) >= want else []

    done = wait_until(merged, timeout, f"{want} promotions merged", poll=0.05)
    start = id_ms(site.entries("promotions")[0][0])
    end = max(id_ms(i) for i, _ in done)
    span = (end - start) / 1000
    return {
        "promotions": want,
        "span_s": span,
        "rate": want / span if span > 0 else float("nan"),
        "ms_per_promotion": span * 1000 / want,
        "dlq": site.r.xlen(site.bus.stream("dlq")),
        "failed": sum(1 for _, f in site.entries("changes") if f["kind"] == "promotion_failed"),
    }


# ---------------------------------------------------------------------------- (p) promotions/s


def run_pr_writers(url: str, root: Path, n: int, replicas: int, run: int) -> dict[str, Any]:
    names = [f"svc-{i:03d}" for i in range(n)]
    site = _site(url, root, f"pw{replicas}-{run}", names)
    try:
        procs = [site.start("pr-writer", k)[0] for k in range(1, replicas + 1)]
        out = _drain_promotions(site, _commands(names, f"pw-{run}"), 60 + 2 * n)
        out["replicas"] = replicas
        out["prs"] = len(list((site.repo_path / "ferry" / "pulls").glob("*.json")))
        out["rss_mb"] = max(_peak_rss_mb(p) for p in procs)
        out["errors"] = site.worker_errors()
        return out
    finally:
        site.stop()


# ---------------------------------------------------------------------------- (s) flat cost


def _spread(names: list[str], k: int) -> list[str]:
    """K services spread evenly over NAMES (every one when there are fewer)."""
    return [names[i * len(names) // k] for i in range(k)] if k < len(names) else list(names)


# `ferry` as a program that never forks a child for half of status's cells (app/split.py), as
# when no core is idle.
ONE_PROCESS = """if True:
    import sys
    from ferry.app import split
    split._core_free = lambda: False
    sys.argv = ["ferry", *sys.argv[1:]]
    from ferry.cli.main import main
    main()
"""


def _cli_wall(site: Site, args: list[str], runs: int, one_process: bool = False) -> dict[str, Any]:
    """Wall time of `ferry ARGS` as a process, and its CPU time (user + system, with its git
    processes' and a forked child's): on a shared machine the wall time follows the load, the
    CPU time much less. ONE_PROCESS: status never splits its cells over two processes."""
    env = site.env()
    walls, cpus = [], []
    out = ""
    ferry = [sys.executable, "-c", ONE_PROCESS] if one_process else [sys.executable, "-m", "ferry"]
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([*ferry, *args], env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if proc.returncode != 0:
            raise RuntimeError(f"ferry {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
        out = proc.stdout
    return {
        "median_s": statistics.median(walls),
        "runs": walls,
        "cpu_s": statistics.median(cpus),
        "cpu_runs": cpus,
        "lines": len(out.splitlines()),
    }


def run_flat(url: str, root: Path, n: int, events: int, promotions: int) -> dict[str, Any]:
    names = [f"svc-{i:05d}" for i in range(n)]
    t0 = time.perf_counter()
    site = _site(url, root, f"flat{n}", names)
    made_s = time.perf_counter() - t0
    out: dict[str, Any] = {"services": n, "repo_s": made_s}
    try:
        # gate-evaluator: green CI in dev for the digest staging pins ('skip'), spread over all.
        spread = _spread(names, events)
        entries = [
            CiResult(
                service=spread[i % len(spread)],
                digest=pinned_digest(spread[i % len(spread)]),
                env="dev",
                check="integration",
            ).to_fields()
            for i in range(events)
        ]
        publish_all(site.r, site.bus.stream("ci"), entries)
        # One entry per read: a read's decisions about one service share its lock and reads,
        # which at 10 services (ten of a read of 100 about each) would hide the size's cost.
        ge, _ = site.start("gate-evaluator", FERRY_READ_COUNT="1")

        def drained() -> bool:
            g = site.group("ci", "gate-evaluator")
            return g.get("lag") == 0 and g.get("pending") == 0 and g.get("entries-read") == events

        wait_until(drained, 600, f"{events} CI entries", poll=0.05)
        audits = site.entries("audit")
        span = (id_ms(audits[-1][0]) - id_ms(audits[0][0])) / 1000
        out["gate"] = {
            "events": events,
            "audits": len(audits),
            "skips": sum(1 for _, f in audits if f.get("outcome") == "skip"),
            "ms_per_event": span * 1000 / max(1, len(audits) - 1),
            "rss_mb": _peak_rss_mb(ge),
        }
        # pr-writer: promotions into dev of services spread over the repository.
        pw, _ = site.start("pr-writer")
        cmds = _commands(_spread(names, promotions), f"flat{n}", promotions)
        cpu = _cpu_s(pw)
        drained_pw = _drain_promotions(site, cmds, 60 + 5 * promotions)
        drained_pw["cpu_ms_per_promotion"] = (_cpu_s(pw) - cpu) * 1000 / promotions
        drained_pw["rss_mb"] = _peak_rss_mb(pw)
        out["pr_writer"] = drained_pw
        # people: status (every service) and explain (one), the workers still up.
        out["status"] = _cli_wall(site, ["status"], 3)
        out["status_one"] = _cli_wall(site, ["status"], 3, one_process=True)
        mid = names[len(names) // 2]
        out["explain"] = _cli_wall(site, ["explain", mid, "staging"], 3)
        out["errors"] = site.worker_errors()
        return out
    finally:
        site.stop()


def python_start(runs: int) -> float:
    """Wall time of `python -m ferry --help`: the interpreter and the CLI's imports, no work."""
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ferry", "--help"], capture_output=True, check=True)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


# ---------------------------------------------------------------------------- running, reporting


def run(url: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    def step(text: str) -> None:
        print(f"[bench.scale {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    res: dict[str, Any] = {"bare": [], "pw1": [], "pw3": [], "flat": {}}
    for r in range(args.runs if args.only in (None, "p") else 0):
        step(f"(p) run {r + 1}/{args.runs}: bare git x{args.promotions}")
        bare = run_bare_git(root / f"bare-{r}", 10, args.promotions)
        res["bare"].append(bare)
        for replicas in (1, 3):
            step(f"(p) run {r + 1}/{args.runs}: {args.promotions} promotions, {replicas} pr-writer")
            res[f"pw{replicas}"].append(run_pr_writers(url, root, args.promotions, replicas, r))
    for n in args.sizes if args.only in (None, "s") else []:
        step(f"(s) {n} services x 3 environments")
        res["flat"][n] = run_flat(url, root, n, args.events, args.flat_promotions)
    res["python_start_s"] = python_start(3)
    res["load_end"] = Path("/proc/loadavg").read_text().split(" ")[0]
    return res


def options(quick: bool = False) -> argparse.Namespace:
    """The counts `python -m bench` runs this benchmark with (as `python -m bench.scale`)."""
    if quick:
        return argparse.Namespace(
            runs=2, promotions=20, sizes=[10, 1000], events=300, flat_promotions=10, only=None
        )
    return argparse.Namespace(
        runs=3, promotions=40, sizes=[10, 1000, 10000], events=1000, flat_promotions=40, only=None
    )


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render(res: dict[str, Any], info: dict[str, str], command: str) -> str:
    runs = (
        f"Medians over {len(res['pw1'])} runs; each run's figure beside it." if res["pw1"] else ""
    )
    lines = [
        "<!-- bench:scale begin -->",
        "## (p) pr-writer: promotions a second, and (s) flat cost to 10,000 services",
        "",
        f"Run: `{command}` on {info['date']}, {info['nproc']} CPUs ({info['cpu']}), "
        f"{info['git']}, 1-minute load average {info['load']} when it started, "
        f"{res['load_end']} at the end (the machine is shared). {runs}".rstrip(),
        "",
    ]
    if res["pw1"]:
        lines += _render_p(res)
    if res["flat"]:
        lines += _render_s(res)
    lines.append("<!-- bench:scale end -->")
    return "\n".join(lines) + "\n"


def _render_p(res: dict[str, Any]) -> list[str]:
    bare_ms = [b["total_ms"]["mean"] for b in res["bare"]]
    bare_rate = [1000 / m for m in bare_ms]
    pw1 = [p["rate"] for p in res["pw1"]]
    pw3 = [p["rate"] for p in res["pw3"]]
    n_p = res["pw1"][0]["promotions"]
    return [
        f"**(p)** {n_p} promotion commands (`open`, into dev, auto-merged) published at once to "
        "`ferry:promotions`, drained by pr-writer on the local forge; rate = promotions / (first "
        "command id to last `pr_merged` id, server clock). Baseline, in the same run: the bare git "
        f"sequence of one promotion (8 git processes, see (a)) in a loop, {n_p} times; rate = "
        "1000 / its mean ms.",
        "",
        "| | promotions/s (median) | runs | vs bare git |",
        "|---|---|---|---|",
        f"| bare git sequence in a loop | **{_med(bare_rate):.1f}** | "
        f"{', '.join(f'{x:.1f}' for x in bare_rate)} | 1.00x |",
        f"| **pr-writer, 1 process** | **{_med(pw1):.1f}** | "
        f"{', '.join(f'{x:.1f}' for x in pw1)} | **{_med(pw1) / _med(bare_rate):.2f}x** |",
        f"| **pr-writer, 3 replicas** | **{_med(pw3):.1f}** | "
        f"{', '.join(f'{x:.1f}' for x in pw3)} | **{_med(pw3) / _med(bare_rate):.2f}x** |",
        "",
        f"- 3 replicas vs 1: {_med(pw3) / _med(pw1):.2f}x. PRs on the forge afterwards: "
        f"{[p['prs'] for p in res['pw1']]} (1 process), {[p['prs'] for p in res['pw3']]} "
        f"(3 replicas); dead letters {sum(p['dlq'] for p in res['pw1'] + res['pw3'])}, failed "
        f"promotions {sum(p['failed'] for p in res['pw1'] + res['pw3'])}.",
        "",
    ]


def _cpu(cli: dict[str, Any]) -> str:
    """The CPU time of a CLI command's runs (median s; each run's), when measured."""
    if "cpu_runs" not in cli:
        return "not measured"
    return f"{cli['cpu_s']:.2f} s: {', '.join(f'{x:.2f}' for x in cli['cpu_runs'])}"


def _render_s(res: dict[str, Any]) -> list[str]:
    flat = res["flat"]
    sizes = sorted(flat)
    small, big = flat[sizes[0]], flat[sizes[-1]]
    lines = [
        f"**(s)** For each size a bare GitOps repository with the scaffold's files "
        "(`ferry.yaml`, `envs/<env>/<service>/values.yaml` for dev, staging, prod), written by "
        "`git fast-import`, staging pinning a digest for every service. Gate: "
        f"{small['gate']['events']} CI entries (green in dev for the digest staging pins: "
        "decision 'skip') spread over every service, published before one gate-evaluator "
        "starts, which reads them one at a time (`FERRY_READ_COUNT=1`: within one read, the "
        "decisions about one service share its lock and reads, and at 10 services every read "
        "of 100 holds ten about each, at 10,000 none; one entry per read compares the cost of a "
        "decision at both sizes); ms/event from audit ids (server clock). pr-writer: "
        f"{big['pr_writer']['promotions']} promotions into dev of services spread over the "
        "repository (at 10 services, four each, one after another), one pr-writer; "
        "ms/promotion = (first command to last `pr_merged`, server clock) / promotions; CPU "
        "ms/promotion = the CPU time pr-writer and the git processes it ran used meanwhile / "
        "promotions (what the load of a shared machine moves least). "
        "Memory: the process's peak RSS (VmHWM) after its run. `ferry status` and "
        "`ferry explain <svc> staging`: wall time of the command as a process, median of 3, "
        "with both workers up; "
        f"`python -m ferry --help` (interpreter and imports, no work) takes "
        f"{res['python_start_s'] * 1000:.0f} ms.",
        "",
        "| services x 3 envs | gate ms/event | pr-writer ms/promotion | pr-writer CPU "
        "ms/promotion | gate-evaluator RSS MB | pr-writer RSS MB | `ferry status` s | "
        "`ferry explain` s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in sizes:
        f = flat[n]
        lines.append(
            f"| {n:,} | {f['gate']['ms_per_event']:.2f} | "
            f"{f['pr_writer']['ms_per_promotion']:.1f} | "
            f"{f['pr_writer']['cpu_ms_per_promotion']:.1f} | {f['gate']['rss_mb']:.0f} | "
            f"{f['pr_writer']['rss_mb']:.0f} | {f['status']['median_s']:.2f} | "
            f"{f['explain']['median_s']:.2f} |"
        )
    big_pw = big["pr_writer"]["ms_per_promotion"]
    big_cpu = big["pr_writer"]["cpu_ms_per_promotion"]

    def good(a: float, b: float) -> str:  # cost: smaller is better; ratio of small to big
        return f"{a / b:.2f}x"

    lines += [
        "",
        f"- **{sizes[-1]:,} vs {sizes[0]:,}** (as good = cost at {sizes[0]:,} / cost at "
        f"{sizes[-1]:,}; goal at least 0.8x): gate per event "
        f"**{good(small['gate']['ms_per_event'], big['gate']['ms_per_event'])}**, pr-writer per "
        f"promotion **{good(small['pr_writer']['ms_per_promotion'], big_pw)}** (CPU "
        f"{good(small['pr_writer']['cpu_ms_per_promotion'], big_cpu)}), "
        f"gate-evaluator memory **{good(small['gate']['rss_mb'], big['gate']['rss_mb'])}**, "
        f"pr-writer memory **{good(small['pr_writer']['rss_mb'], big['pr_writer']['rss_mb'])}**.",
        f"- At {sizes[-1]:,} services: `ferry status` **{big['status']['median_s']:.2f} s** "
        f"({big['status']['lines']} lines; runs "
        f"{', '.join(f'{x:.2f}' for x in big['status']['runs'])}; CPU "
        f"{_cpu(big['status'])}; in one process, as when no core is idle: "
        f"{big['status_one']['median_s']:.2f} s, CPU {_cpu(big['status_one'])}), `ferry explain` "
        f"**{big['explain']['median_s']:.2f} s** (runs "
        f"{', '.join(f'{x:.2f}' for x in big['explain']['runs'])}; CPU "
        f"{_cpu(big['explain'])}); goal under 1 s. At {sizes[0]:,}: status "
        f"{small['status']['median_s']:.2f} s (CPU {_cpu(small['status'])}), explain "
        f"{small['explain']['median_s']:.2f} s (CPU {_cpu(small['explain'])}).",
        "- Writing the repositories (not timed as Ferry): "
        + ", ".join(f"{n:,}: {flat[n]['repo_s']:.1f} s" for n in sizes)
        + f". Skips audited: {', '.join(str(flat[n]['gate']['skips']) for n in sizes)}; "
        f"pr-writer dead letters {sum(flat[n]['pr_writer']['dlq'] for n in sizes)}.",
    ]
    gate_r = small["gate"]["ms_per_event"] / big["gate"]["ms_per_event"]
    pw_r = small["pr_writer"]["ms_per_promotion"] / big_pw
    missed: list[str] = []
    if gate_r < 0.8:
        missed.append(
            f"- **gate per event ({gate_r:.2f}x)**: a decision reads no values file at either "
            "size (main's pins are in gate-evaluator's memory, read whole when it starts and "
            "carried to each new main by the files `git diff-tree` says changed: "
            "adapters/pins.py), so the gap is not reading main. What else grows with the "
            "services: each event's Redis keys are new ones (a cold server-side lookup, the same "
            "count at both sizes), and the machine's load between the two sizes' runs; rerun "
            "when it is quiet before changing code."
        )
    if pw_r < 0.8:
        missed.append(
            f"- **pr-writer per promotion ({pw_r:.2f}x wall, "
            f"{small['pr_writer']['cpu_ms_per_promotion'] / big_cpu:.2f}x CPU)**: pr-writer no "
            "longer reads, compresses or merges the environment's directory (a 360 kB tree at "
            "10,000 services) for each promotion: it keeps the trees it wrote by id (main's own "
            "once merged), stores large loose objects uncompressed, and the local forge takes a "
            "head cut from the current main as the merge's tree. What is left at 10,000: writing "
            "and hashing that tree once a promotion (about 1 ms in-process, timed alone), and, "
            "outside pr-writer, "
            "gate-evaluator following each merge on the same 2 cores. A wall-time ratio from "
            "one run on a loaded machine moves by more than the gap (see the CPU figure); "
            "closing what is left: runs on a quiet machine, several rounds of both sizes in "
            "turns."
        )
    if big["status"]["median_s"] >= 1:
        missed.append(
            f"- **`ferry status` at {sizes[-1]:,} services ({big['status']['median_s']:.1f} s)**: "
            "main's pins come whole from the CLI's kept copy when main has not moved (no "
            "`ls-tree`), every cell's Redis keys are planned and fetched in two round trips "
            "packed by hand (app/bulk.py, adapters/pipelined.py, the replies taken from "
            "hiredis's reader), `gather` runs once per cell with a digest to move and `decide` "
            "once per such cell; a cell with no digest to move gets no snapshot (one decision "
            "per source answers them all); with a core idle, the second half of the cells is "
            "read and decided in a forked child (app/split.py: the CPU time then exceeds the "
            "wall time), and the process ends without the interpreter's teardown once the "
            "output is written. What remains is the interpreter and the imports (about a "
            "quarter of a second, nearly all of it what status uses: pydantic-settings, "
            "redis-py, which imports its asyncio client, the policy's and the events' models) "
            "and Python per cell: about 70 us of CPU for each cell with a digest to move (12 "
            "planning its nine reads, 10 fetching them, 20 `gather`'s snapshot, 28 `decide` "
            "and its gates), about 5 us for the others. Closing it, without storing "
            "decisions: cheaper per-cell reads and gates, or a process per core on a machine "
            "with more of them."
        )
    if big["explain"]["median_s"] >= 1:
        missed.append(
            f"- **`ferry explain` at {sizes[-1]:,} services ({big['explain']['median_s']:.2f} s)"
            f"**: it reads one service's values files, not main's pins whole; its CPU time "
            f"({_cpu(big['explain'])}) against {_cpu(small['explain'])} at {sizes[0]:,} "
            "says whether the size or the machine's load made it slow."
        )
    if missed:
        lines += ["", "Where a goal is missed, why, and what would close it:", "", *missed]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller counts, sizes 10 and 1000")
    p.add_argument("--runs", type=int, default=3, help="(p) runs of each configuration")
    p.add_argument("--promotions", type=int, default=40, help="(p) promotions per run")
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000])
    p.add_argument("--events", type=int, default=1000, help="(s) CI entries per size")
    p.add_argument("--flat-promotions", type=int, default=40, help="(s) promotions per size")
    p.add_argument(
        "--only", choices=["p", "s"], help="run one part (written only to an --out of your own)"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if args.quick:
        vars(args).update(vars(options(quick=True)))
    from ferry.adapters.embedded import start_server

    server = start_server()
    try:
        import redis

        url = server.connection_url
        info = machine(redis.Redis.from_url(url).info("server"))
        with tempfile.TemporaryDirectory(prefix="ferry-bench-scale-") as tmp:
            res = run(url, Path(tmp), args)
    finally:
        server.stop()
    command = " ".join([".venv/bin/python -m bench.scale", *map(shlex.quote, argv)])
    if args.only:
        print(json.dumps(res, indent=1, default=str))
        if args.out == DEFAULT_OUT:
            return 0  # one part alone never replaces bench/RESULTS.md's section
    text = render(res, info, command)
    print(text)
    errors = [p["errors"] for p in res["pw1"] + res["pw3"]]
    errors += [f["errors"] for f in res["flat"].values()]
    if any(errors):
        print("worker errors:\n" + "\n".join(e for e in errors if e), file=sys.stderr)
    write_section(text, args.out, MARK_BEGIN, MARK_END)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("FERRY_LOG_LEVEL", "WARNING")
    sys.exit(main())
