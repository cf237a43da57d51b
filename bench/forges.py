"""Forge requests per promotion: what one auto-merged promotion costs on each HTTP forge.

For each provider, a fake forge of that flavour (the tests' `tests/forgefake`, real HTTP and git
over HTTP) and one pr-writer process; N promotions to dev (one service each, auto-merged) are
published straight to `ferry:promotions`, and the fake counts the API requests it answered:
content-creating ones (POST, PUT, PATCH, DELETE: what GitHub's secondary limits count) and reads,
plus git's HTTP requests. The goal the issue sets: at most 2 content-creating requests per
auto-merged promotion on GitHub.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench.env import digest_of
from ferry.adapters.bus import Bus
from ferry.adapters.scaffold import scaffold
from ferry.core.events import decode_fields
from ferry.runtime.runner import spawn_worker, stop_processes
from ferry.runtime.settings import Settings
from tests.forgefake import FakeForge
from tests.helpers import open_in_dev

FLAVOURS = ("github", "gitea", "gitlab")
# The fewest content-creating requests each API allows for an opened, labelled and merged PR.
FLOOR = {"github": 3, "gitea": 3, "gitlab": 2}


def run_one(url: str, root: Path, flavour: str, count: int) -> dict[str, Any]:
    root = root / f"forge-{flavour}"
    names = [f"svc-{i:02d}" for i in range(count)]
    scaffold(root / "gitops", names)
    fake = FakeForge(root / "fake", flavour).start()
    prefix = f"bench-forge-{flavour}-{os.getpid()}:"
    settings = Settings(redis_url=url, stream_prefix=prefix, home=root / "home")
    bus = Bus(settings, url)
    procs = []
    try:
        fake.seed(root / "gitops")
        env = {
            **os.environ,
            **fake.settings_env(),
            "FERRY_REDIS_URL": url,
            "FERRY_STREAM_PREFIX": prefix,
            "FERRY_HOME": str(root / "home"),
            "FERRY_LOG_LEVEL": "WARNING",
            "FERRY_CONSUMER": "pr-writer-1",
        }
        procs.append(spawn_worker("pr-writer", env, root / "pr-writer.log"))
        started = time.perf_counter()
        for name in names:
            bus.publish(open_in_dev(name, digest_of(f"{flavour}-{name}")))
        deadline = time.monotonic() + 60 + 10 * count
        merged: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            changes = [decode_fields(f) for _, f in bus.redis.xrange(bus.stream("changes"))]
            merged = [c for c in changes if c["kind"] == "pr_merged"]
            if len(merged) >= count:
                break
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        if len(merged) < count:
            raise RuntimeError(f"{flavour}: only {len(merged)}/{count} promotions merged")
        with fake.lock:
            requests = list(fake.requests)
        api = [r for r in requests if r["api"]]
        writes = [r for r in api if r["method"] != "GET"]
        per_path: dict[str, int] = {}
        for r in writes:
            key = f"{r['method']} {_shape(r['path'])}"
            per_path[key] = per_path.get(key, 0) + 1
        return {
            "flavour": flavour,
            "promotions": count,
            "writes_per_promotion": len(writes) / count,
            "reads_per_promotion": (len(api) - len(writes)) / count,
            "git_requests_per_promotion": (len(requests) - len(api)) / count,
            "writes_by_route": {k: v / count for k, v in sorted(per_path.items())},
            "floor": FLOOR[flavour],
            "seconds_per_promotion": elapsed / count,
        }
    finally:
        stop_processes(procs)
        fake.stop()


def _shape(path: str) -> str:
    """/api/v3/repos/acme/gitops/pulls/12/merge -> .../pulls/N/merge"""
    parts = [("N" if p.isdigit() else "SHA" if len(p) == 40 else p) for p in path.split("/")]
    return "/".join(parts[-3:])


def run(url: str, root: Path, count: int) -> list[dict[str, Any]]:
    load = os.getloadavg()[0]
    return [{**run_one(url, root, flavour, count), "load": load} for flavour in FLAVOURS]


def render(rows: list[dict[str, Any]]) -> str:
    out = [
        "## (f) Forge requests per auto-merged promotion",
        "",
        __doc__.split("\n\n", 1)[1].strip().replace("\n", " "),
        "",
        f"Command: `.venv/bin/python -m bench.forges {rows[0]['promotions']}` (this section alone;"
        " `make bench` runs it with 10 promotions per provider).",
        "",
        "| provider | promotions | content-creating / promotion | the API's floor "
        "| reads / promotion | git HTTP requests / promotion | s / promotion (1 pr-writer) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['flavour']} | {r['promotions']} | **{r['writes_per_promotion']:.2f}** "
            f"| {r['floor']} | {r['reads_per_promotion']:.2f} "
            f"| {r['git_requests_per_promotion']:.2f} | {r['seconds_per_promotion']:.2f} |"
        )
    out.append("")
    out.append(
        f"Content-creating counts do not depend on the machine; the seconds do (1-minute load "
        f"average when the section started: {rows[0]['load']:.1f}, on 2 CPUs shared with other "
        "work). GitHub cannot create a PR with labels, so its floor for a labelled PR is 3; the "
        "issue's goal of 2 would mean not labelling auto-merged PRs."
    )
    out.append("")
    for r in rows:
        routes = ", ".join(f"`{k}` {v:g}" for k, v in r["writes_by_route"].items())
        out.append(f"- {r['flavour']}: {routes}")
    out.append("")
    return "\n".join(out)


SECTION = "## (f) Forge requests per auto-merged promotion"


def splice(results_md: str, section: str) -> str:
    """RESULTS_MD with its forge section replaced by SECTION (or SECTION appended)."""
    start = results_md.find(SECTION)
    if start < 0:
        return results_md.rstrip("\n") + "\n\n" + section
    end = results_md.find("\n## ", start + len(SECTION))
    rest = results_md[end + 1 :] if end >= 0 else ""
    return results_md[:start] + section + ("\n" + rest if rest else "")


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.forges [N]`: run this section alone and update bench/RESULTS.md."""
    import sys
    import tempfile

    from ferry.adapters.embedded import start_server

    args = sys.argv[1:] if argv is None else argv
    count = int(args[0]) if args else 10
    server = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="ferry-bench-forges-") as tmp:
            rows = run(server.connection_url, Path(tmp), count)
    finally:
        server.stop()
    section = render(rows)
    print(section)
    out = Path(__file__).parent / "RESULTS.md"
    out.write_text(splice(out.read_text(), section))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
