"""Microbenchmarks of the parts of Ferry's per-event path, run in this process on the same
server and the same kind of GitOps repository as the worker benchmarks, so that the gap between
a worker and its baseline can be split into measured pieces."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import logging
import pstats
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from bench.env import Site, commit_all, digest_of, run_git, services
from bench.throughput import publish_all
from ferry.adapters.bus import Bus
from ferry.core.events import AuditRecord, decode_fields, parse, promotion_id
from ferry.runtime.dispatcher import Dispatcher
from ferry.runtime.settings import Settings
from ferry.runtime.worker import WorkerContext

# Labels of the gate-evaluator parts (the report refers to them by these names).
DECODE = "decode_fields (bytes -> str)"
PARSE = "events.parse (pydantic CiResult)"
SPAWN = "bare `git rev-parse` subprocess"
MAIN_LOOSE = "GitOpsRepo.main_commit() (loose ref file)"
MAIN_PACKED = "GitOpsRepo.main_commit() after `git pack-refs` (falls back to `git rev-parse`)"
AT_MAIN = "GitOpsRepo.at_main() (main_commit + MainSnapshot)"
POLICY = "snapshot.policy (cached)"
EXISTS = "snapshot.values_exists() (file cached)"
REPOSITORY = "snapshot.repository() (file cached, parse remembered)"
PINNED = "snapshot.pinned() (file cached, parse remembered)"
POLICY_COLD = "snapshot.policy, main moved, ferry.yaml unchanged (cat-file, parse reused)"
EXISTS_COLD = "snapshot.values_exists(), main moved (cat-file)"
PINNED_COLD_SAME = "snapshot.pinned(), main moved, file unchanged (cat-file, parse remembered)"
PINNED_COLD_CHANGED = "snapshot.pinned(), main moved, file changed (cat-file + ruamel parse)"
READ_VALUE = "values.read_value (ruamel parse)"
LOAD_POLICY = "policy.load_policy (parse of ferry.yaml)"
AUDIT = "Bus.audit (AuditRecord + XADD)"
AUDIT_FIELDS = "AuditRecord(...).to_fields() alone"
XACK = "XACK round trip"
HSET = "EvidenceStore.record_check (HSET)"
HGETALL = "EvidenceStore.get (HGETALL)"
LOCK = "Bus.lock enter + exit (SET NX, Lua unlock)"
HOP = "asyncio.to_thread hop (no-op)"


@contextlib.contextmanager
def counting_subprocesses() -> Iterator[dict[str, Any]]:
    """Count subprocess.run calls (every git Ferry runs goes through it) while inside, and keep
    the git subcommand of each (`box["cmds"]`)."""
    real = subprocess.run
    box: dict[str, Any] = {"n": 0, "cmds": []}

    def run(*args: Any, **kwargs: Any) -> Any:
        box["n"] += 1
        argv = args[0] if args else kwargs.get("args", [])
        box["cmds"].append(git_subcommand(list(argv)))
        return real(*args, **kwargs)

    subprocess.run = run  # type: ignore[assignment]
    try:
        yield box
    finally:
        subprocess.run = real  # type: ignore[assignment]


def git_subcommand(argv: list[str]) -> str:
    """`git -C x -c k=v --git-dir=y rev-parse ...` -> 'rev-parse'."""
    rest = argv[1:] if argv and argv[0] == "git" else argv
    i = 0
    while i < len(rest):
        a = rest[i]
        if a in ("-C", "-c"):
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        return a
    return "?"


def timed(fn: Callable[[int], Any], n: int) -> dict[str, float]:
    """Call FN(i) N times; per-call milliseconds and subprocesses per call."""
    fn(0)  # warm
    samples = []
    with counting_subprocesses() as box:
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            samples.append((time.perf_counter() - t) * 1000)
    return {
        "n": n,
        "mean": statistics.fmean(samples),
        "p50": statistics.median(samples),
        "git": box["n"] / n,
    }


def timed_setup(setup: Callable[[int], Any], fn: Callable[[Any], Any], n: int) -> dict[str, float]:
    """For i in 1..N: X = SETUP(i) untimed, then time FN(X). Call 0 (warm-up) is not counted."""
    fn(setup(0))
    samples = []
    calls = 0
    for i in range(1, n + 1):
        x = setup(i)
        with counting_subprocesses() as box:
            t = time.perf_counter()
            fn(x)
            samples.append((time.perf_counter() - t) * 1000)
        calls += box["n"]
    return {
        "n": n,
        "mean": statistics.fmean(samples),
        "p50": statistics.median(samples),
        "git": calls / n,
    }


def _pending(r: redis.Redis, stream: str, group: str, entries: list[dict[str, str]]) -> list[str]:
    """Publish ENTRIES to STREAM and read them into GROUP's pending list; their ids."""
    r.delete(stream)
    publish_all(r, stream, entries)
    r.xgroup_create(stream, group, id="0")
    got = r.xreadgroup(group, "micro", {stream: ">"}, count=len(entries))
    return [i.decode() for i, _ in got[0][1]]


def gate_evaluator_parts(
    url: str, repo: Path, home: Path, fail: list[dict[str, str]], skip: list[dict[str, str]], n: int
) -> dict[str, Any]:
    from ferry.adapters.gitops import GitOpsRepo, MainSnapshot
    from ferry.adapters.state import EvidenceStore
    from ferry.core.policy import load_policy
    from ferry.core.values import read_value, set_digest
    from ferry.runtime import resources
    from ferry.runtime.logging import configure, get_logger
    from gate_evaluator.worker import WORKER

    configure("WARNING", "json")  # as the workers run in the benchmark
    settings = Settings(
        redis_url=url, stream_prefix="bmicro:", gitops_repo=str(repo), home=home, consumer="micro"
    )
    bus = Bus(settings, url)
    r = bus.redis
    ctx = WorkerContext(
        name="gate-evaluator", settings=settings, bus=bus, log=get_logger(worker="gate-evaluator")
    )
    gitops = resources.gitops(ctx)
    gitops.policy()
    gitdir = str(repo / ".git")
    s = fail[0]["service"]
    text = gitops.read_main(f"envs/dev/{s}/values.yaml")
    raw = {k.encode(): v.encode() for k, v in fail[0].items()}
    stream = bus.stream("ci")
    sample_id = r.xadd("bmicro:scratch", {"x": "1"})
    loop = asyncio.new_event_loop()

    parts: dict[str, dict[str, float]] = {}
    parts[DECODE] = timed(lambda i: decode_fields(raw), n)
    parts[PARSE] = timed(lambda i: parse("ci", fail[i % len(fail)], entry_id=f"1-{i}"), n)
    parts[SPAWN] = timed(
        lambda i: subprocess.run(
            ["git", f"--git-dir={gitdir}", "rev-parse", "--verify", "refs/heads/main^{commit}"],
            capture_output=True,
            check=True,
        ),
        n,
    )
    parts[MAIN_LOOSE] = timed(lambda i: gitops.main_commit(), n)
    parts[AT_MAIN] = timed(lambda i: gitops.at_main(), n)
    snap = gitops.at_main()
    s2 = fail[1]["service"] if fail[1]["service"] != s else fail[2]["service"]
    parts[POLICY] = timed(lambda i: snap.policy, n)
    parts[EXISTS] = timed(lambda i: snap.values_exists(s, "dev"), n)
    parts[REPOSITORY] = timed(lambda i: snap.repository(s, "dev"), n)
    parts[PINNED] = timed(lambda i: snap.pinned(s, "staging"), n)

    # After main moves: a copy of the repository with K new commits on main, each changing
    # S's staging values file only; the parts below read each commit for the first time.
    k = max(10, n // 4)
    cold_repo = home.parent / "micro-cold"
    shutil.copytree(repo, cold_repo)
    staging = cold_repo / "envs" / "staging" / s / "values.yaml"
    for i in range(k + 1):
        staging.write_text(set_digest(staging.read_text(), "image.digest", digest_of(f"cold-{i}")))
        commit_all(f"cold {i}", cwd=cold_repo)
    commits = run_git("rev-list", "--reverse", f"-{k + 1}", "HEAD", cwd=cold_repo).split()
    cold = GitOpsRepo(remote=str(cold_repo), workdir=home.parent / "micro-cold-work")

    def snap_at(i: int) -> MainSnapshot:
        return MainSnapshot(cold, commits[i])

    def warm_policy(i: int) -> MainSnapshot:
        sn = snap_at(i)
        sn.policy  # noqa: B018 - the policy of this commit read first, untimed
        return sn

    parts[POLICY_COLD] = timed_setup(snap_at, lambda sn: sn.policy, k)
    parts[EXISTS_COLD] = timed_setup(warm_policy, lambda sn: sn.values_exists(s, "dev"), k)
    parts[PINNED_COLD_SAME] = timed_setup(warm_policy, lambda sn: sn.pinned(s2, "staging"), k)
    parts[PINNED_COLD_CHANGED] = timed_setup(warm_policy, lambda sn: sn.pinned(s, "staging"), k)
    loose_before = (cold_repo / ".git" / "refs" / "heads" / "main").is_file()
    run_git("pack-refs", "--all", cwd=cold_repo)
    packed = not (cold_repo / ".git" / "refs" / "heads" / "main").exists()
    cold_fresh = GitOpsRepo(remote=str(cold_repo), workdir=home.parent / "micro-cold-work2")
    parts[MAIN_PACKED] = timed(lambda i: cold_fresh.main_commit(), n)
    shutil.rmtree(cold_repo)
    parts[READ_VALUE] = timed(lambda i: read_value(text, "image.digest"), n)
    policy_text = gitops.read_main("ferry.yaml")
    parts[LOAD_POLICY] = timed(lambda i: load_policy(policy_text, "ferry.yaml"), k)
    parts[AUDIT] = timed(
        lambda i: bus.audit(
            "gate-evaluator", "promote", "svc@sha", "refused", "CI failed", caused_by=f"ci:1-{i}"
        ),
        n,
    )
    parts[AUDIT_FIELDS] = timed(
        lambda i: AuditRecord(
            worker="gate-evaluator",
            action="promote",
            subject="x",
            outcome="refused",
            reason="r",
            caused_by="c",
        ).to_fields(),
        n,
    )
    parts[XACK] = timed(lambda i: r.xack("bmicro:scratch", "g", sample_id), n)
    ev = EvidenceStore(bus)
    parts[HSET] = timed(
        lambda i: ev.record_check(s, digest_of("x"), "dev", "integration", "success", None), n
    )
    parts[HGETALL] = timed(lambda i: ev.get(s, digest_of("x"), "dev"), n)

    def locked(i: int) -> None:
        with bus.lock(f"decide:{s}:staging"):
            pass

    parts[LOCK] = timed(locked, n)

    async def hop() -> None:
        await asyncio.to_thread(lambda: None)

    parts[HOP] = timed(lambda i: loop.run_until_complete(hop()), n)
    loop.close()

    dispatcher = Dispatcher(WORKER, ctx)
    whole: dict[str, dict[str, float]] = {}
    profiles: dict[str, dict[str, float]] = {}
    for mode, entries in (("failure", fail), ("skip", skip)):
        # First pass, untimed: each service's values files at this commit are read once (the
        # worker in (b) does the same on its first pass over the services).
        ids = _pending(r, stream, "gate-evaluator", entries[:n])
        with counting_subprocesses() as first:
            for entry_id, fields in zip(ids, entries, strict=False):
                dispatcher.process("ci", entry_id, fields, 1)
        r.delete(stream)
        ids = _pending(r, stream, "gate-evaluator", entries[:n])
        outcomes: list[str] = []
        samples = []
        with counting_subprocesses() as box:
            for entry_id, fields in zip(ids, entries, strict=False):
                t = time.perf_counter()
                outcomes.append(dispatcher.process("ci", entry_id, fields, 1))
                samples.append((time.perf_counter() - t) * 1000)
        whole[mode] = {
            "n": len(samples),
            "mean": statistics.fmean(samples),
            "p50": statistics.median(samples),
            "git": box["n"] / len(samples),
            "done": outcomes.count("done"),
            "first_pass_git": first["n"],
            "first_pass_cmds": sorted(set(first["cmds"])),
        }
        r.delete(stream)
        ids = _pending(r, stream, "gate-evaluator", entries[:n])
        profiles[mode] = profile(
            lambda ids=ids, entries=entries: [
                dispatcher.process("ci", ids[i], entries[i], 1) for i in range(len(ids))
            ],
            len(ids),
        )
        r.delete(stream)
    r.delete("bmicro:scratch")
    return {
        "parts": parts,
        "dispatcher": whole,
        "profile": profiles,
        "cold_commits": k,
        "loose_ref": loose_before,
        "packed": packed,
        "services": (s, s2),
    }


def profile(fn: Callable[[], Any], n: int) -> dict[str, float]:
    """cProfile FN; cumulative milliseconds per event in a few places that matter."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in stats.values())
    wanted = {
        "subprocess.run (git)": lambda f, fn: f.endswith("subprocess.py") and fn == "run",
        "ruamel YAML parse (values.read_value)": lambda f, fn: (
            f.endswith("values.py") and fn == "read_value"
        ),
        "redis-py commands": lambda f, fn: (
            f.endswith("redis/client.py") and fn == "execute_command"
        ),
        "pydantic validate (events.parse)": lambda f, fn: f.endswith("events.py") and fn == "parse",
    }
    out = {"total": total * 1000 / n}
    for label, match in wanted.items():
        out[label] = sum(ct for (f, _, fn_), (_, _, _, ct, _) in stats.items() if match(f, fn_))
        out[label] = out[label] * 1000 / n
    return out


def faststream_noop(url: str, entries: list[dict[str, str]]) -> dict[str, float]:
    """FastStream with the subscriber settings Ferry uses, a handler that only decodes and
    acknowledges from a thread (as Ferry's does): the framework's share of the per-event time."""
    from faststream import AckPolicy
    from faststream.redis import RedisBroker, StreamSub
    from faststream.redis.annotations import RedisStreamMessage

    stream, group = "bench-faststream:ci", "noop"
    r = redis.Redis.from_url(url)
    r.delete(stream)
    publish_all(r, stream, entries)
    r.xgroup_create(stream, group, id="0")
    times: list[float] = []

    async def main() -> None:
        done = asyncio.Event()
        broker = RedisBroker(url, logger=None, log_level=logging.DEBUG)

        @broker.subscriber(
            stream=StreamSub(
                stream, group=group, consumer="noop-1", polling_interval=100, max_records=1
            ),
            ack_policy=AckPolicy.MANUAL,
            no_reply=True,
        )
        async def consume(message: RedisStreamMessage) -> None:
            entry_id = message.raw_message["message_ids"][0]
            fields = decode_fields(message.raw_message["data"])
            assert fields["kind"] == "ci"
            await asyncio.to_thread(r.xack, stream, group, entry_id)
            times.append(time.perf_counter())
            if len(times) == len(entries):
                done.set()

        await broker.start()
        try:
            await asyncio.wait_for(done.wait(), 120)
        finally:
            await broker.stop()

    asyncio.run(main())
    r.delete(stream)
    span = times[-1] - times[0]
    return {
        "entries": len(times),
        "rate": (len(times) - 1) / span,
        "per_event_ms": span * 1000 / (len(times) - 1),
    }


def pr_writer_parts(url: str, root: Path, n_services: int, k: int) -> dict[str, Any]:
    """The pr-writer's git and forge steps, each timed alone, on a fresh scaffolded repo."""
    from ferry.adapters.forge import LocalForge
    from ferry.adapters.gitops import GitOpsRepo

    site = Site(url, "bmicro-pr:", root / "micro-pr")
    names = services(n_services)
    site.scaffold(names)
    gitops = GitOpsRepo(remote=str(site.repo_path), workdir=root / "micro-pr-work")
    forge = LocalForge(site.repo_path)
    gitops.policy()
    steps: dict[str, list[float]] = {
        "prepare_promotion": [],
        "open_pr": [],
        "merge_pr": [],
        "find_pr": [],
    }
    git_calls: dict[str, list[int]] = {k_: [] for k_ in steps}
    cmds: dict[str, list[str]] = {}  # git subcommands of each step, last promotion
    for i in range(-1, k):  # -1: untimed warm-up (first clone, merge scratch clone)
        s = names[i % n_services]
        digest = digest_of(f"micro-pr-{i}")
        pid = promotion_id(s, digest, "staging")
        branch = f"ferry/staging/{s}/{digest[7:19]}"
        actions: dict[str, Callable[[], Any]] = {
            "find_pr": lambda pid=pid: forge.find_pr(pid),
            "prepare_promotion": lambda s=s, d=digest, b=branch: gitops.prepare_promotion(
                branch=b, service=s, env="staging", digest=d, message=f"Promote {s}"
            ),
            "open_pr": lambda b=branch, pid=pid: forge.open_pr(
                head=b, title="t", body="b", labels=["ferry", "env/staging"], key=pid
            ),
        }
        pr = None
        for name in ("find_pr", "prepare_promotion", "open_pr", "merge_pr"):
            fn = actions.get(name) or (lambda: forge.merge_pr(pr.number))  # noqa: B023
            with counting_subprocesses() as box:
                t = time.perf_counter()
                result = fn()
                elapsed = (time.perf_counter() - t) * 1000
            if i >= 0:
                steps[name].append(elapsed)
                git_calls[name].append(box["n"])
                cmds[name] = list(box["cmds"])
            if name == "open_pr":
                pr = result
    out: dict[str, Any] = {
        name: {
            "p50": statistics.median(v),
            "mean": statistics.fmean(v),
            "git": statistics.fmean(git_calls[name]),
            "cmds": cmds.get(name, []),
        }
        for name, v in steps.items()
    }
    out["k"] = k
    return out
