"""(c) Canary rollback: the deciding (failed) measurement published -> the values file on main
back at the previous digest (canary-watcher judges, asks for a rollback; pr-writer opens and
merges the rollback PR). Baseline, measured in the same run on the same site: the promotion that
made the canary (build published -> the digest pinned: gate-evaluator asks, pr-writer opens and
merges), the same one-PR git work behind one more worker."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.env import REGISTRY, Site, commit_all, digest_of, run_git, services, summary, wait_until
from ferry.adapters.gitops import GitOpsRepo
from ferry.core.events import CanaryMeasurement, CiResult
from ferry.core.values import set_digest

POLICY = """\
environments:
  prod:
    promote_from: build
    auto_merge: true
    strategy: canary
    canary: {count: 100, progress_deadline: 1h}
"""


def run(url: str, root: Path, n: int) -> dict[str, Any]:
    names = services(n)
    site = Site(url, "bcanary:", root / "canary")
    site.scaffold(names)
    clone = root / "canary-clone"
    run_git("clone", "-q", str(site.repo_path), str(clone))
    (clone / "ferry.yaml").write_text(POLICY)
    before = {s: digest_of(f"canary-before-{s}") for s in names}
    for s in names:
        path = clone / "envs" / "prod" / s / "values.yaml"
        path.write_text(set_digest(path.read_text(), "image.digest", before[s]))
    commit_all("prod: a canary; every service pins a first digest", clone)
    run_git("push", "-q", "origin", "main", cwd=clone)
    repo = GitOpsRepo(remote=str(site.repo_path), workdir=root / "canary-reader")
    promote_ms, rollback_ms = [], []
    try:
        for name in ("gate-evaluator", "pr-writer", "canary-watcher"):
            site.start(name)
        for s in names:
            canary = digest_of(f"canary-bad-{s}")
            t0 = time.perf_counter()
            site.bus.publish(CiResult(service=s, digest=canary, image=f"{REGISTRY}/{s}"))
            wait_until(lambda s=s, d=canary: repo.pinned(s, "prod") == d, 60, "the canary pinned")
            promote_ms.append((time.perf_counter() - t0) * 1000)
            wait_until(
                lambda s=s: site.r.exists(site.settings.key("canary", s, "prod")), 30, "analysis"
            )
            t1 = time.perf_counter()
            site.bus.publish(
                CanaryMeasurement(
                    service=s, digest=canary, env="prod", metric="error-rate", phase="failed"
                )
            )
            wait_until(lambda s=s: repo.pinned(s, "prod") == before[s], 60, "the rollback")
            rollback_ms.append((time.perf_counter() - t1) * 1000)
        errors = site.worker_errors()
    finally:
        site.stop()
    return {
        "runs": n,
        "promote_ms": summary(promote_ms),
        "rollback_ms": summary(rollback_ms),
        "errors": errors,
    }


def render(res: dict[str, Any]) -> list[str]:
    p, r = res["promote_ms"], res["rollback_ms"]
    return [
        "## (c) Canary rollback: deciding measurement -> previous digest pinned on main\n",
        f"{res['runs']} services, one after the other, on the local forge; one gate-evaluator, one "
        "pr-writer, one canary-watcher. Rollback: a `failed` measurement published to "
        "`ferry:canary` -> the service's prod values file on main pins the digest it pinned "
        "before (judge, rollback command, rollback PR opened and merged). Baseline, same run: the "
        "build published -> the canary digest pinned (one promotion PR opened and merged).\n",
        "| | p50 ms | p90 ms | max ms |",
        "|---|---|---|---|",
        f"| rollback (measurement -> pinned back) | {r['p50']:.0f} | {r['p90']:.0f} | "
        f"{r['max']:.0f} |",
        f"| baseline: promotion (build -> pinned) | {p['p50']:.0f} | {p['p90']:.0f} | "
        f"{p['max']:.0f} |",
        "",
    ]
