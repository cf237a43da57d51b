"""(b) Throughput of one gate-evaluator process handling a backlog of CI entries (one at a time,
or READ_COUNT per read), on entries that take the real validation and decision path but write
nothing to git. Baseline: a bare redis-py XREADGROUP COUNT n / decode / XACK loop over the same
entries (one XACK per read)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.env import REGISTRY, Site, commit_all, digest_of, id_ms, wait_until
from ferry.adapters.bus import STREAM_MAXLEN
from ferry.core.events import CiResult, decode_fields

MODES = {
    "failure": "failed builds (status=failure): validated, image checked, audited 'refused'",
    "skip": "green CI in dev for the digest staging already pins: decision 'skip'",
}


def pinned_digest(service: str) -> str:
    return digest_of(f"pinned-{service}")


def pin_staging(site: Site, names: list[str]) -> None:
    """Set up (not through Ferry): staging already pins a digest for every service."""
    from ferry.core.values import set_digest

    for s in names:
        path = site.repo_path / "envs" / "staging" / s / "values.yaml"
        path.write_text(set_digest(path.read_text(), "image.digest", pinned_digest(s)))
    commit_all("bench: pin staging", cwd=site.repo_path)


def entries_for(mode: str, names: list[str], m: int) -> list[dict[str, str]]:
    out = []
    for i in range(m):
        s = names[i % len(names)]
        if mode == "failure":
            event = CiResult(
                service=s,
                digest=digest_of(f"fail-{i}"),
                image=f"{REGISTRY}/{s}",
                status="failure",
                commit="4f1c2ab",
                author="bench",
            )
        else:
            event = CiResult(service=s, digest=pinned_digest(s), env="dev", check="integration")
        out.append(event.to_fields())
    return out


def publish_all(r: Any, stream: str, entries: list[dict[str, str]]) -> None:
    with r.pipeline(transaction=False) as pipe:
        for n, fields in enumerate(entries, 1):
            pipe.xadd(stream, fields, maxlen=STREAM_MAXLEN, approximate=True)
            if n % 500 == 0:
                pipe.execute()
        pipe.execute()


def commands(r: Any) -> int:
    """Commands the server has run so far, less the benchmark's own polling (INFO, XINFO)."""
    stats = r.info("commandstats")
    return sum(
        v["calls"] for k, v in stats.items() if not k.startswith(("cmdstat_info", "cmdstat_xinfo"))
    )


def run_ferry(
    url: str,
    root: Path,
    mode: str,
    names: list[str],
    m: int,
    read_count: int | None = 1,
    tag: str = "",
    replicas: int = 1,
) -> dict[str, Any]:
    """M entries drained by REPLICAS gate-evaluator processes (one unless told), each reading
    READ_COUNT entries per XREADGROUP (None: the worker's default)."""
    site = Site(url, f"btp-{mode}{tag}:", root / f"throughput-{mode}{tag}")
    site.scaffold(names)
    pin_staging(site, names)
    entries = entries_for(mode, names, m)
    publish_all(site.r, site.bus.stream("ci"), entries)
    extra = {} if read_count is None else {"FERRY_READ_COUNT": str(read_count)}
    try:
        t0 = time.perf_counter()
        before = commands(site.r)
        _, startup = site.start("gate-evaluator", **extra)
        for n in range(2, replicas + 1):
            site.start("gate-evaluator", n, **extra)

        def drained() -> bool:
            g = site.group("ci", "gate-evaluator")
            return g.get("lag") == 0 and g.get("pending") == 0 and g.get("entries-read") == m

        wait_until(drained, 3600, f"{m} entries acknowledged", poll=0.05)
        wall = time.perf_counter() - t0
        # Polls of XINFO GROUPS above are left out; the worker's start and idle polls are in.
        per_entry = (commands(site.r) - before) / m
        audits = site.entries("audit")
        outcomes: dict[str, int] = {}
        for _, f in audits:
            outcomes[f["outcome"]] = outcomes.get(f["outcome"], 0) + 1
        first, last = id_ms(audits[0][0]), id_ms(audits[-1][0])
        span = (last - first) / 1000
        return {
            "mode": mode,
            "entries": m,
            "audits": len(audits),
            "outcomes": outcomes,
            "span_s": span,
            "rate": (len(audits) - 1) / span if span > 0 else float("nan"),
            "wall_s": wall,
            "wall_rate": m / wall,
            "startup_s": startup,
            "commands_per_entry": per_entry,
            "dlq": site.r.xlen(site.bus.stream("dlq")),
            "promotions": site.r.xlen(site.bus.stream("promotions")),
            "errors": site.worker_errors(),
            "site": site,
            "entries_fields": entries,
        }
    finally:
        site.stop()


def run_bare(r: Any, mode: str, entries: list[dict[str, str]], count: int = 1) -> dict[str, Any]:
    """XREADGROUP COUNT n, decode each entry's fields to str, one XACK for the read: nothing
    else."""
    stream, group = f"bench-bare:{mode}:ci", "bare"
    r.delete(stream)
    publish_all(r, stream, entries)
    r.xgroup_create(stream, group, id="0")
    n = 0
    t0 = time.perf_counter()
    while True:
        got = r.xreadgroup(group, "bare-1", {stream: ">"}, count=count, block=100)
        if not got:
            break
        for _, messages in got:
            for _, raw in messages:
                fields = decode_fields(raw)
                assert fields["kind"] == "ci"
            r.xack(stream, group, *[entry_id for entry_id, _ in messages])
            n += len(messages)
        if n == len(entries):
            break
    elapsed = time.perf_counter() - t0
    r.delete(stream)
    return {
        "entries": n,
        "seconds": elapsed,
        "rate": n / elapsed,
        "per_event_ms": elapsed / n * 1000,
    }
