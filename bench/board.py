"""The board: (1) what a page of the grid costs among 1,000 services, batched (one read of main, a
few pipelined round trips to Redis) beside the same cells read one at a time like `ferry explain`
(the baseline, same run, same data); (2) how long after an approval is published the open page's
prod cell changes in headless Chromium, beside when gate-evaluator's decision about it was on the
audit stream (the baseline: what Ferry knew, before the board's push and fetch).
`python -m bench.board` runs this section alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.env import Site, commit_all, digest_of, id_ms, summary, wait_until

PROD = """
  prod:
    promote_from: staging
    auto_merge: true
    gates:
      approval: {min_approvals: 1, approvers: [release-lead], author_can_approve: false}
"""


def render_cost(url: str, root: Path, n: int = 1000, per_page: int = 50, pages: int = 5) -> dict:
    from ferry.adapters.gitops import GitOpsRepo
    from ferry.app.board import Query, grid
    from ferry.app.explain import explanation

    site = Site(url, "bboard:", root / "board-render")
    names = [f"svc-{i:04d}" for i in range(n)]
    site.scaffold(names)
    batched, one_by_one, trips, commands = [], [], [], []
    for page in range(1, pages + 1):
        now = datetime.now(UTC)
        repo = GitOpsRepo(site.repo_path, root / f"board-clone-b{page}")  # a cold file cache
        repo.services()
        t0 = time.perf_counter()
        g = grid(repo, site.bus, Query(page=page, per_page=per_page), now)
        batched.append((time.perf_counter() - t0) * 1000)
        trips.append(g.cost.round_trips)
        commands.append(g.cost.commands)
        repo = GitOpsRepo(site.repo_path, root / f"board-clone-s{page}")
        repo.services()
        t0 = time.perf_counter()
        main = repo.at_main()
        repo.services()  # the grid lists the services once too
        for service in names[(page - 1) * per_page : page * per_page]:
            for env in main.policy.env_names():
                explanation(site.bus, main, service, env, now)
        one_by_one.append((time.perf_counter() - t0) * 1000)
    return {
        "services": n,
        "per_page": per_page,
        "batched_ms": summary(batched),
        "one_by_one_ms": summary(one_by_one),
        "round_trips": max(trips),
        "commands": max(commands),
    }


def live_latency(url: str, root: Path, n: int = 5) -> dict[str, Any] | None:
    """None without Debian's chromium and chromium-driver."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return None
    from ferry.core.events import CiResult, Signal
    from tests.browser import chromium
    from tests.helpers import free_port

    site = Site(url, "bboardl:", root / "board-live")
    names = [f"svc-{i}" for i in range(n)]
    site.scaffold(names)
    policy = site.repo_path / "ferry.yaml"
    text = policy.read_text()
    head, _, rest = text.partition("  # prod:")
    policy.write_text(head + PROD + rest[rest.index("\n# Approver groups") :])
    commit_all("prod: an approval only", cwd=site.repo_path)
    browsers = chromium()
    try:
        site.start("gate-evaluator")
        site.start("pr-writer")
        port = free_port()
        board = subprocess.Popen(
            [sys.executable, "-m", "ferry", "board", "--port", str(port)],
            env=site.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        site.procs.append(board)
        digests = {s: digest_of(f"board-{s}") for s in names}
        for s, d in digests.items():
            site.bus.publish(CiResult(service=s, digest=d, image=f"registry.example.com/shop/{s}"))
        for s, d in digests.items():
            wait_until(lambda s=s, d=d: _pinned(site, s, "dev", d), 60, f"{s} in dev")
            site.bus.publish(CiResult(service=s, digest=d, env="dev"))
        for s, d in digests.items():
            wait_until(lambda s=s, d=d: _pinned(site, s, "staging", d), 60, f"{s} in staging")
        driver = next(browsers)
        base = f"http://127.0.0.1:{port}/"
        wait_until(lambda: _answers(base), 30, "the board")
        driver.get(base)
        wait_until(lambda: driver.find_element("id", "live").text == "live", 30, "the stream")
        driver.execute_script(_WATCH)
        cell_ms, audit_ms = [], []
        for s, d in digests.items():
            wait_until(
                lambda s=s: driver.execute_script(f"return waiting('{s}')"), 30, f"{s} waiting"
            )
            published = time.time()
            site.bus.publish(
                Signal(kind="approval", service=s, digest=d, env="prod", actor="release-lead")
            )
            changed = wait_until(
                lambda s=s: driver.execute_script(f"return window.changedAt['{s}']"),
                30,
                f"{s}'s prod cell to change",
                poll=0.01,
            )
            cell_ms.append(changed - published * 1000)
            decided = _decision_after(site, s, published)
            audit_ms.append(decided - published * 1000)
        return {"n": n, "cell_ms": summary(cell_ms), "decision_ms": summary(audit_ms)}
    finally:
        browsers.close()
        site.stop()


# The page notes, per service, the first moment its prod cell no longer shows a waiting approval.
_WATCH = """
window.changedAt = {};
window.waiting = (s) => {
  const cell = document.querySelector('#svc-' + s + ' td[data-env="prod"]');
  const gate = 'li[data-gate="approval"][data-status="waiting"]';
  return cell !== null && cell.querySelector(gate) !== null;
};
new MutationObserver(() => {
  document.querySelectorAll('tr[data-service]').forEach((row) => {
    const s = row.dataset.service;
    if (window.changedAt[s] === undefined && window.seen && window.seen[s] && !window.waiting(s)) {
      window.changedAt[s] = Date.now();
    }
    if (window.waiting(s)) { window.seen = window.seen || {}; window.seen[s] = true; }
  });
}).observe(document.getElementById('grid'), {childList: true, subtree: true});
document.querySelectorAll('tr[data-service]').forEach((row) => {
  if (window.waiting(row.dataset.service)) {
    window.seen = window.seen || {}; window.seen[row.dataset.service] = true;
  }
});
"""


def _pinned(site: Site, service: str, env: str, digest: str) -> bool:
    path = site.repo_path / "envs" / env / service / "values.yaml"
    from ferry.adapters.git import git

    text = git("show", f"main:{path.relative_to(site.repo_path)}", cwd=site.repo_path)
    return digest in text


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "healthz").status_code == 200
    except httpx.TransportError:
        return False


def _decision_after(site: Site, service: str, after_s: float) -> float:
    """The server-clock ms of gate-evaluator's first audit record about SERVICE in prod after
    AFTER_S (epoch seconds)."""

    def found() -> float | None:
        for entry_id, fields in site.entries("audit"):
            if (
                id_ms(entry_id) >= after_s * 1000 - 5
                and fields.get("worker") == "gate-evaluator"
                and fields.get("subject", "").startswith(f"{service}@")
                and fields.get("subject", "").endswith("-> prod")
            ):
                return float(id_ms(entry_id))
        return None

    return float(wait_until(found, 30, f"the decision about {service}"))


def run(url: str, root: Path) -> dict[str, Any]:
    return {"render": render_cost(url, root), "live": live_latency(url, root)}


def report(results: dict[str, Any]) -> str:
    r = results["render"]
    lines = [
        "## The board",
        "",
        f"(1) One page of {r['per_page']} services (x 3 environments) among {r['services']}, "
        "cold file cache, no promotion in flight, median of "
        f"{r['batched_ms']['count']} pages: batched {r['batched_ms']['p50']:.0f} ms "
        f"({r['round_trips']} pipelined round trips to Redis, {r['commands']} commands; one "
        f"`git cat-file --batch`) beside one cell at a time like `ferry explain` "
        f"{r['one_by_one_ms']['p50']:.0f} ms (the baseline, same run).",
    ]
    live = results["live"]
    if live is None:
        lines.append("(2) skipped: no chromium and chromium-driver on this machine.")
    else:
        lines.append(
            f"(2) Approval published -> the open page's prod cell changed (headless Chromium, "
            f"{live['n']} services): median {live['cell_ms']['p50']:.0f} ms, max "
            f"{live['cell_ms']['max']:.0f} ms; beside gate-evaluator's decision on the audit "
            f"stream (the baseline): median {live['decision_ms']['p50']:.0f} ms, max "
            f"{live['decision_ms']['max']:.0f} ms."
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    import tempfile

    from ferry.adapters.embedded import start_server

    server = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="ferry-bench-board-") as tmp:
            results = run(server.connection_url, Path(tmp))
    finally:
        server.stop()
    print(Path("/proc/loadavg").read_text().split()[0], "load average (1 min) at the end")
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
