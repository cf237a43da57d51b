"""Preview reaping: how late after its expiry each preview is reaped by two preview-reaper
replicas, beside a baseline measured in the same run (one thread that sleeps until each of the
same due times, the lateness the OS and Python add on this machine with nothing else to do).
`python -m bench.previews` runs this section alone."""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.env import Site, commit_all, summary, wait_until

# Expiries spread over SPREAD_S seconds, the first LEAD_S after the events are published (so that
# every event is recorded before the first expiry).
LEAD_S = 6.0
SPREAD_S = 10.0
POLICY = "{ttl: 1h, max_ttl: 2h, quota_per_team: null, warn_before: 0s}"


def _due_times(n: int, start: datetime) -> list[datetime]:
    return [start + timedelta(seconds=LEAD_S + SPREAD_S * i / n) for i in range(n)]


def run_ferry(url: str, root: Path, n: int, replicas: int = 2) -> dict[str, Any]:
    from ferry.adapters.gitops import GitOpsRepo
    from ferry.adapters.preview_store import PreviewStore
    from ferry.core.events import PreviewEvent
    from ferry.core.previews import preview_status

    site = Site(url, f"bprev{replicas}:", root / f"previews-{replicas}")
    site.scaffold(["api"])
    policy = site.repo_path / "ferry.yaml"
    head, _, rest = policy.read_text().partition("\npreviews:\n")
    policy.write_text(f"{head}\npreviews: {POLICY}\n{rest[rest.index(chr(10) * 2) :]}")
    commit_all("previews: no quota, no warning", cwd=site.repo_path)
    try:
        for k in range(1, replicas + 1):
            site.start("preview-reaper", k)
        rules = GitOpsRepo(site.repo_path, root / f"previews-{replicas}-clone").policy().previews
        store = PreviewStore(site.bus)
        start = datetime.now(UTC)
        dues = _due_times(n, start)
        keys = []
        t0 = time.perf_counter()
        for i, until in enumerate(dues):
            keys.append(f"shop/app#{i + 1}")
            site.bus.publish(
                PreviewEvent(
                    kind="opened", repo="shop/app", pr=i + 1, labels=["preview"], until=until
                )
            )
        publish_s = time.perf_counter() - t0

        def all_reaped() -> bool:
            records = [store.load(k) for k in keys]
            return all(r is not None and any(m.kind == "reaped" for m in r.marks) for r in records)

        wait_until(all_reaped, LEAD_S + SPREAD_S + 120, "every preview reaped", poll=0.5)
        late, twice, early = [], 0, 0
        for key in keys:
            record = store.load(key)
            assert record is not None
            reaped = [m for m in record.marks if m.kind == "reaped"]
            twice += len(reaped) > 1
            status = preview_status(rules, record.history(), reaped[0].at)
            assert status.expires_at is not None
            seconds = (reaped[0].at - status.expires_at).total_seconds()
            early += seconds < 0
            late.append(seconds * 1000)
        return {
            "n": n,
            "replicas": replicas,
            "publish_s": publish_s,
            "late_ms": summary(late),
            "early": early,
            "twice": twice,
            "errors": site.worker_errors(),
        }
    finally:
        site.stop()


def run_baseline(n: int) -> dict[str, Any]:
    """One thread sleeping until each due time in turn (time.sleep), as late as it wakes."""
    start = datetime.now(UTC)
    dues = [d.timestamp() - LEAD_S + 0.5 for d in _due_times(n, start)]
    late: list[float] = []

    def sleeper() -> None:
        for due in dues:
            left = due - time.time()
            if left > 0:
                time.sleep(left)
            late.append((time.time() - due) * 1000)

    thread = threading.Thread(target=sleeper)
    thread.start()
    thread.join()
    return {"n": n, "late_ms": summary(late)}


def run(url: str, root: Path, n: int) -> dict[str, Any]:
    load = os.getloadavg()[0]
    return {
        "load": load,
        "ferry": run_ferry(url, root, n),
        "baseline": run_baseline(n),
    }


def _row(label: str, s: dict[str, float]) -> str:
    return (
        f"| {label} | {s['count']} | {s['p50']:.1f} | {s['p90']:.1f} | {s['p99']:.1f} "
        f"| {s['max']:.1f} |"
    )


def render(res: dict[str, Any]) -> list[str]:
    f, b = res["ferry"], res["baseline"]
    out = ["## Preview reaping\n"]
    out.append(
        f"{f['n']} previews with absolute ends spread over {SPREAD_S:.0f} s, the first "
        f"{LEAD_S:.0f} s after they were published ({f['publish_s']:.2f} s to publish), reaped by "
        f"{f['replicas']} preview-reaper replicas on the local forge (1-minute load average at the "
        f"start: {res['load']:.2f}). Lateness is the reaper's own mark time minus the expiry the "
        "rule computes; the baseline is one thread sleeping until each of the same due times.\n"
    )
    out.append("| lateness after expiry | count | p50 ms | p90 ms | p99 ms | max ms |")
    out.append("|---|---|---|---|---|---|")
    out.append(_row(f"preview-reaper x{f['replicas']}", f["late_ms"]))
    out.append(_row("baseline: time.sleep until the due time", b["late_ms"]))
    out.append(
        f"\nReaped early: {f['early']}; reaped twice: {f['twice']}. The reaper sleeps until the "
        "earliest due time in its sorted set (or a wake-up on its list), claims what is due with "
        "one Lua script, and records the reaping in one transaction: the difference to the "
        "baseline is those Redis round trips and the recording of the label removal and the "
        "comment."
    )
    if f["errors"]:
        out.append("\n```\n" + f["errors"] + "\n```")
    out.append("")
    return out


def main() -> int:
    import tempfile

    from ferry.adapters.embedded import start_server

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    server = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="ferry-bench-") as tmp:
            print("\n".join(render(run(server.connection_url, Path(tmp), n))))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
