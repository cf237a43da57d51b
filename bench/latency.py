"""(a) Reaction latency: green CI result in dev published -> staging PR merged on the local forge,
at a steady rate, with one gate-evaluator and one or more pr-writer processes. Baseline: the bare
git sequence of one promotion (branch, one-line edit, commit, push; merge --no-ff, push main)."""

from __future__ import annotations

import argparse
import shlex
import statistics
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
    run_git,
    services,
    summary,
    wait_until,
    write_section,
)
from ferry.core.events import CiResult, promotion_id


def _changes(site: Site, kind: str, env: str) -> dict[str, tuple[int, dict[str, str]]]:
    return {
        f["service"]: (id_ms(i), f)
        for i, f in site.entries("changes")
        if f.get("kind") == kind and f.get("env") == env
    }


def run_ferry(
    url: str,
    root: Path,
    n: int,
    rate: float,
    n_slow: int = 0,
    slow_rate: float = 2.0,
    pr_writers: int = 1,
    run: str = "",
) -> dict[str, Any]:
    """N services at RATE/s; then N_SLOW more, one at a time at SLOW_RATE/s (no backlog).
    PR_WRITERS replicas of pr-writer (consumers pr-writer-1..), one gate-evaluator. RUN names a
    repeated run (its own stream prefix and directory)."""
    names = services(n + n_slow)
    tag = ("" if pr_writers == 1 else f"-{pr_writers}pw") + run
    site = Site(url, f"blat{tag}:", root / f"latency{tag}")
    site.scaffold(names)
    try:
        _, ge_start = site.start("gate-evaluator")
        pw_starts = [site.start("pr-writer", k)[1] for k in range(1, pr_writers + 1)]
        pw_start = max(pw_starts)
        digests = {s: digest_of(f"latency-{s}") for s in names}

        # Warm-up: every service gets its digest pinned in dev (build -> dev PR merged).
        t0 = time.perf_counter()
        for s in names:
            site.bus.publish(CiResult(service=s, digest=digests[s], image=f"{REGISTRY}/{s}"))
        wait_until(lambda: len(_changes(site, "pr_merged", "dev")) >= len(names), 180, "dev pinned")
        _wait_idle(site)
        warmup_s = time.perf_counter() - t0

        out = _phase(site, names[:n], digests, rate, pr_writers)
        if n_slow:
            _wait_idle(site)
            out["slow"] = _phase(site, names[n:], digests, slow_rate, pr_writers)
        out.update(
            {
                "pr_writers": pr_writers,
                "services": n,
                "warmup_s": warmup_s,
                "startup_s": {"gate-evaluator": ge_start, "pr-writer": pw_start},
                "dlq": site.r.xlen(site.bus.stream("dlq")),
                "prs": len(list((site.repo_path / ".git" / "ferry" / "pulls").glob("*.json"))),
                "repo": site.repo_path,
                "errors": site.worker_errors(),
            }
        )
        return out
    finally:
        site.stop()


def _wait_idle(site: Site) -> None:
    """gate-evaluator has handled every change (staging: "waiting for CI"), pr-writer every
    command."""

    def idle() -> bool:
        a = site.group("changes", "gate-evaluator")
        b = site.group("promotions", "pr-writer")
        return all(g.get("lag") == 0 and g.get("pending") == 0 for g in (a, b))

    wait_until(idle, 60, "workers idle")


def _replica_of(site: Site, pr_writers: int, env: str) -> dict[str, int]:
    """Which pr-writer replica cut each service's promotion branch into ENV: the push of
    `prepare_promotion` leaves the branch as a remote-tracking ref in that replica's own clone
    (FERRY_HOME/work/...). Services whose branch is in no clone, or in more than one, are left
    out."""
    seen: dict[str, list[int]] = {}
    for k in range(1, pr_writers + 1):
        settings = site.settings.model_copy(update={"consumer": f"pr-writer-{k}"})
        work = settings.workdir("pr-writer")
        if not (work / ".git").is_dir():
            continue
        refs = run_git(
            "for-each-ref", "--format=%(refname)", f"refs/remotes/origin/ferry/{env}/", cwd=work
        ).split()
        for ref in refs:
            seen.setdefault(ref.split("/")[5], []).append(k)
    return {svc: ks[0] for svc, ks in seen.items() if len(ks) == 1}


def _phase(
    site: Site, names: list[str], digests: dict[str, str], rate: float, pr_writers: int = 1
) -> dict[str, Any]:
    """Green CI in dev for each of NAMES at a steady RATE per second; per-promotion timelines."""
    starts: dict[str, int] = {}
    begin = time.perf_counter()
    late = 0.0
    for k, s in enumerate(names):
        due = begin + k / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        else:
            late = max(late, now - due)
        entry = site.bus.publish(
            CiResult(service=s, digest=digests[s], env="dev", check="integration")
        )
        starts[s] = id_ms(entry)
    publish_s = time.perf_counter() - begin
    wanted = set(names)
    wait_until(
        lambda: wanted <= set(_changes(site, "pr_merged", "staging")),
        240,
        "staging merges",
        poll=0.05,
    )

    merged = _changes(site, "pr_merged", "staging")
    opened = _changes(site, "pr_opened", "staging")
    commands = {
        f["promotion_id"]: id_ms(i)
        for i, f in site.entries("promotions")
        if f.get("target_env") == "staging"
    }
    replica = _replica_of(site, pr_writers, "staging") if pr_writers > 1 else {}
    rows = []
    for s in names:
        pid = promotion_id(s, digests[s], "staging")
        rows.append(
            {
                "service": s,
                "ci": starts[s],
                "command": commands[pid],
                "opened": opened[s][0],
                "merged": merged[s][0],
                "replica": replica.get(s, 1) if pr_writers > 1 else 1,
            }
        )
    latency = [float(r["merged"] - r["ci"]) for r in rows]
    out: dict[str, Any] = {
        "events": len(names),
        "rate": rate,
        "latency_ms": summary(latency),
        "publish_s": publish_s,
        "publish_late_s": late,
        "attributed": len(names) if pr_writers == 1 else sum(1 for s in names if s in replica),
    }
    if pr_writers > 1:
        out["per_replica"] = {
            k: sum(1 for r in rows if r["replica"] == k) for k in range(1, pr_writers + 1)
        }
    if out["attributed"] < len(names):
        return out  # replicas not attributed cleanly: end-to-end figures only
    # Each pr-writer replica handles one command at a time, in stream order: it starts on a
    # command when the command exists and its own previous promotion is done.
    rows.sort(key=lambda r: r["command"])
    prev_done: dict[int, int] = {}
    for r in rows:
        r["start"] = max(r["command"], prev_done.get(r["replica"], 0))
        prev_done[r["replica"]] = r["merged"]
    if any(r["opened"] < r["start"] for r in rows):
        # a replica opened a PR before finishing its previous one: the attribution is wrong
        out["attributed"] = 0
        return out
    stages = {
        "gate-evaluator (CI entry -> promotion command)": [r["command"] - r["ci"] for r in rows],
        "queued for pr-writer": [r["start"] - r["command"] for r in rows],
        "pr-writer: branch + push + open PR (start -> pr_opened)": [
            r["opened"] - r["start"] for r in rows
        ],
        "pr-writer: merge (pr_opened -> pr_merged)": [r["merged"] - r["opened"] for r in rows],
    }
    service_ms = [float(r["merged"] - r["start"]) for r in rows]
    unqueued = [float(r["merged"] - r["ci"]) for r in rows if r["start"] == r["command"]]
    # Promotions completed per second while the burst was being worked off.
    span_s = (max(r["merged"] for r in rows) - min(r["command"] for r in rows)) / 1000
    out.update(
        {
            "stages_ms": {k: summary([float(x) for x in v]) for k, v in stages.items()},
            "pr_writer_service_ms": summary(service_ms),
            "unqueued_latency_ms": summary(unqueued),
            "span_s": span_s,
            "completed_per_s": len(rows) / span_s if span_s > 0 else float("nan"),
        }
    )
    return out


BARE_STEPS = [
    "fetch",
    "checkout -B",
    "edit",
    "commit -a",
    "push branch",
    "fetch (merge clone)",
    "checkout base",
    "merge --no-ff",
    "push main",
]


def run_bare_git(root: Path, n: int, runs: int) -> dict[str, Any]:
    """The git work of one promotion, nothing else: subprocess git in two plain clones."""
    from ferry.adapters.scaffold import scaffold

    names = services(n)
    remote = root / "bare-remote"
    scaffold(remote, names)
    work, merge = root / "bare-work", root / "bare-merge"
    run_git("clone", "-q", "--no-tags", str(remote), str(work))
    run_git("clone", "-q", "--no-tags", str(remote), str(merge))
    totals: list[float] = []
    steps: dict[str, list[float]] = {s: [] for s in BARE_STEPS}
    for i in range(runs):
        s = names[i % n]
        branch = f"bench/staging/{s}/{i}"
        path = work / "envs" / "staging" / s / "values.yaml"
        marks = [time.perf_counter()]

        def mark() -> None:
            marks.append(time.perf_counter())  # noqa: B023 - used within this iteration only

        run_git("fetch", "-q", "--prune", "--no-tags", "origin", cwd=work)
        mark()
        run_git("checkout", "-q", "-f", "-B", branch, "origin/main", cwd=work)
        mark()
        text = path.read_text()
        old = next(line for line in text.splitlines() if line.startswith("  digest:"))
        path.write_text(text.replace(old, f'  digest: "{digest_of(f"bare-{i}")}"', 1))
        mark()
        run_git(
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "-a",
            "--no-verify",
            "-m",
            f"promote {s}",
            cwd=work,
        )
        mark()
        run_git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
        mark()
        run_git(
            "fetch",
            "-q",
            "--no-tags",
            "origin",
            "+refs/heads/main:refs/remotes/origin/main",
            f"+refs/heads/{branch}:refs/remotes/origin/{branch}",
            cwd=merge,
        )
        mark()
        run_git("checkout", "-q", "-f", "--detach", "origin/main", cwd=merge)
        mark()
        run_git(
            "-c",
            "commit.gpgsign=false",
            "merge",
            "-q",
            "--no-ff",
            "--no-verify",
            "-m",
            f"Merge {branch}",
            f"origin/{branch}",
            cwd=merge,
        )
        mark()
        run_git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=merge)
        mark()
        totals.append((marks[-1] - marks[0]) * 1000)
        for name, a, b in zip(BARE_STEPS, marks[:-1], marks[1:], strict=True):
            steps[name].append((b - a) * 1000)
    return {
        "runs": runs,
        "total_ms": summary(totals),
        "steps_ms": {k: summary(v) for k, v in steps.items()},
        "git_processes": 8,
    }


# ---------------------------------------------------------------------------- run alone


def reaction(url: str, root: Path, events: int, rate: float, runs: int, git_runs: int) -> dict:
    """RUNS times: one gate-evaluator and one pr-writer at RATE green CI results a second, then
    the bare git sequence timed alone (GIT_RUNS promotions one after another)."""
    out: dict[str, list[dict[str, Any]]] = {"ferry": [], "bare": []}
    for r in range(runs):
        print(f"[bench.latency] run {r + 1}/{runs}", file=sys.stderr, flush=True)
        run_root = root / f"run-{r}"
        run_root.mkdir()
        out["ferry"].append(run_ferry(url, run_root, events, rate, run=f"-run{r}"))
        out["bare"].append(run_bare_git(run_root, events, git_runs))
    return out


def render_reaction(res: dict, info: dict[str, str], command: str, load_end: str) -> str:
    med = statistics.median
    p50 = [f["latency_ms"]["p50"] for f in res["ferry"]]
    p99 = [f["latency_ms"]["p99"] for f in res["ferry"]]
    bare = [b["total_ms"]["p50"] for b in res["bare"]]
    ratio = [a / b for a, b in zip(p50, bare, strict=True)]
    f0 = res["ferry"][0]
    busy = [f["pr_writer_service_ms"]["p50"] for f in res["ferry"] if "pr_writer_service_ms" in f]
    rate_done = [f["completed_per_s"] for f in res["ferry"] if "completed_per_s" in f]

    def runs(values: list[float], fmt: str = ".0f") -> str:
        return ", ".join(format(v, fmt) for v in values)

    lines = [
        "<!-- bench:reaction begin -->",
        "## (a') Reaction at 10 events/s with one pr-writer, run alone",
        "",
        f"Run: `{command}` on {info['date']}, {info['nproc']} CPUs ({info['cpu']}), "
        f"{info['git']}; 1-minute load average {info['load']} at the start, {load_end} at the "
        f"end (shared machine). {len(p50)} runs, each: {f0['events']} services pinned in dev, "
        f"then green CI in dev for each at {f0['rate']:g}/s to one gate-evaluator and one "
        "pr-writer on the local forge (latency = CI entry -> staging `pr_merged`, server clock); "
        "then the bare git sequence of one promotion (as in (a)) timed alone, "
        f"{res['bare'][0]['runs']} times. Medians over the runs; each run's figure in brackets.",
        "",
        "| | median | runs |",
        "|---|---|---|",
        f"| Ferry p50 ms | **{med(p50):.0f}** | {runs(p50)} |",
        f"| Ferry p99 ms | **{med(p99):.0f}** | {runs(p99)} |",
        f"| bare git sequence p50 ms (alone) | **{med(bare):.0f}** | {runs(bare)} |",
        f"| **Ferry p50 / bare git p50** | **{med(ratio):.2f}x** | {runs(ratio, '.2f')} |",
        f"| pr-writer busy per promotion, p50 ms | {med(busy) if busy else float('nan'):.0f} | "
        f"{runs(busy)} |",
        f"| promotions completed per second | "
        f"{med(rate_done) if rate_done else float('nan'):.1f} | {runs(rate_done, '.1f')} |",
        "",
        f"Goals: p50 at most 2x the bare sequence ({'met' if med(ratio) <= 2 else 'missed'}), "
        f"p99 under 1 s ({'met' if med(p99) < 1000 else 'missed'}). Dead letters: "
        f"{sum(f['dlq'] for f in res['ferry'])}.",
        "<!-- bench:reaction end -->",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    p.add_argument("--events", type=int, default=40)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--git-runs", type=int, default=30)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    import redis

    from ferry.adapters.embedded import start_server

    server = start_server()
    try:
        info = machine(redis.Redis.from_url(server.connection_url).info("server"))
        with tempfile.TemporaryDirectory(prefix="ferry-bench-latency-") as tmp:
            res = reaction(
                server.connection_url, Path(tmp), args.events, args.rate, args.runs, args.git_runs
            )
    finally:
        server.stop()
    load_end = Path("/proc/loadavg").read_text().split(" ")[0]
    command = " ".join([".venv/bin/python -m bench.latency", *map(shlex.quote, argv)])
    text = render_reaction(res, info, command, load_end)
    print(text)
    write_section(text, args.out, "<!-- bench:reaction begin -->", "<!-- bench:reaction end -->")
    return 0


if __name__ == "__main__":
    sys.exit(main())
