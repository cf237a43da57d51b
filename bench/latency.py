"""(a) Reaction latency: green CI result in dev published -> staging PR merged on the local forge,
at a steady rate, with one gate-evaluator and one or more pr-writer processes. Baseline: the bare
git sequence of one promotion (branch, one-line edit, commit, push; merge --no-ff, push main)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.env import REGISTRY, Site, digest_of, id_ms, run_git, services, summary, wait_until
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
) -> dict[str, Any]:
    """N services at RATE/s; then N_SLOW more, one at a time at SLOW_RATE/s (no backlog).
    PR_WRITERS replicas of pr-writer (consumers pr-writer-1..), one gate-evaluator."""
    names = services(n + n_slow)
    tag = "" if pr_writers == 1 else f"-{pr_writers}pw"
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
