"""Microbenchmarks of the parts of Ferry's per-event path, run in this process on the same
server and the same kind of GitOps repository as the worker benchmarks, so that the gap between
a worker and its baseline can be split into measured pieces."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import logging
import pstats
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from bench.env import Site, digest_of, services
from bench.throughput import publish_all
from ferry.bus import Bus, Dispatcher, WorkerContext
from ferry.events import AuditRecord, decode_fields, parse, promotion_id
from ferry.settings import Settings


@contextlib.contextmanager
def counting_subprocesses() -> Iterator[dict[str, int]]:
    """Count subprocess.run calls (every git Ferry runs goes through it) while inside."""
    real = subprocess.run
    box = {"n": 0}

    def run(*args: Any, **kwargs: Any) -> Any:
        box["n"] += 1
        return real(*args, **kwargs)

    subprocess.run = run  # type: ignore[assignment]
    try:
        yield box
    finally:
        subprocess.run = real  # type: ignore[assignment]


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


def _pending(r: redis.Redis, stream: str, group: str, entries: list[dict[str, str]]) -> list[str]:
    """Publish ENTRIES to STREAM and read them into GROUP's pending list; their ids."""
    r.delete(stream)
    publish_all(r, stream, entries)
    r.xgroup_create(stream, group, id="0")
    got = r.xreadgroup(group, "micro", {stream: ">"}, count=len(entries))
    return [i.decode() for i, _ in got[0][1]]


def gate_evaluator_parts(url: str, repo: Path, home: Path, fail: list[dict[str, str]],
                         skip: list[dict[str, str]], n: int) -> dict[str, Any]:
    from ferry import resources
    from ferry.logging import configure, get_logger
    from ferry.policy import load_policy
    from ferry.state import EvidenceStore
    from ferry.values import read_value
    from gate_evaluator.worker import WORKER

    configure("WARNING", "json")  # as the workers run in the benchmark
    settings = Settings(redis_url=url, stream_prefix="bmicro:", gitops_repo=str(repo), home=home,
                        consumer="micro")
    bus = Bus(settings, url)
    r = bus.redis
    ctx = WorkerContext(name="gate-evaluator", settings=settings, bus=bus,
                        log=get_logger(worker="gate-evaluator"))
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
    parts["decode_fields (bytes -> str)"] = timed(lambda i: decode_fields(raw), n)
    parts["events.parse (pydantic CiResult)"] = timed(
        lambda i: parse("ci", fail[i % len(fail)], entry_id=f"1-{i}"), n)
    parts["bare `git rev-parse` subprocess"] = timed(lambda i: subprocess.run(
        ["git", f"--git-dir={gitdir}", "rev-parse", "--verify", "refs/heads/main^{commit}"],
        capture_output=True, check=True), n)
    parts["GitOpsRepo.main_commit()"] = timed(lambda i: gitops.main_commit(), n)
    parts["GitOpsRepo.policy() (cached)"] = timed(lambda i: gitops.policy(), n)
    parts["GitOpsRepo.values_exists()"] = timed(lambda i: gitops.values_exists(s, "dev"), n)
    parts["GitOpsRepo.repository()"] = timed(lambda i: gitops.repository(s, "dev"), n)
    parts["GitOpsRepo.pinned()"] = timed(lambda i: gitops.pinned(s, "staging"), n)
    parts["values.read_value (ruamel parse)"] = timed(
        lambda i: read_value(text, "image.digest"), n)
    policy_text = gitops.read_main("ferry.yaml")
    parts["policy.load_policy (on a cache miss: main moved)"] = timed(
        lambda i: load_policy(policy_text, "ferry.yaml"), max(10, n // 4))
    parts["Bus.audit (AuditRecord + XADD)"] = timed(
        lambda i: bus.audit("gate-evaluator", "promote", "svc@sha", "refused", "CI failed",
                            caused_by=f"ci:1-{i}"), n)
    parts["AuditRecord(...).to_fields() alone"] = timed(
        lambda i: AuditRecord(worker="gate-evaluator", action="promote", subject="x",
                              outcome="refused", reason="r", caused_by="c").to_fields(), n)
    parts["XACK round trip"] = timed(lambda i: r.xack("bmicro:scratch", "g", sample_id), n)
    ev = EvidenceStore(bus)
    parts["EvidenceStore.record_check (HSET)"] = timed(
        lambda i: ev.record_check(s, digest_of("x"), "dev", "integration", "success", None), n)
    parts["EvidenceStore.get (HGETALL)"] = timed(lambda i: ev.get(s, digest_of("x"), "dev"), n)

    def locked(i: int) -> None:
        with bus.lock(f"decide:{s}:staging"):
            pass

    parts["Bus.lock enter + exit (SET NX, Lua unlock)"] = timed(locked, n)

    async def hop() -> None:
        await asyncio.to_thread(lambda: None)

    parts["asyncio.to_thread hop (no-op)"] = timed(lambda i: loop.run_until_complete(hop()), n)
    loop.close()

    dispatcher = Dispatcher(WORKER, ctx)
    whole: dict[str, dict[str, float]] = {}
    profiles: dict[str, dict[str, float]] = {}
    for mode, entries in (("failure", fail), ("skip", skip)):
        ids = _pending(r, stream, "gate-evaluator", entries[:n])
        outcomes: list[str] = []
        samples = []
        with counting_subprocesses() as box:
            for entry_id, fields in zip(ids, entries, strict=False):
                t = time.perf_counter()
                outcomes.append(dispatcher.process("ci", entry_id, fields, 1))
                samples.append((time.perf_counter() - t) * 1000)
        whole[mode] = {"n": len(samples), "mean": statistics.fmean(samples),
                       "p50": statistics.median(samples), "git": box["n"] / len(samples),
                       "done": outcomes.count("done")}
        r.delete(stream)
        ids = _pending(r, stream, "gate-evaluator", entries[:n])
        profiles[mode] = profile(lambda ids=ids, entries=entries: [
            dispatcher.process("ci", ids[i], entries[i], 1) for i in range(len(ids))], len(ids))
        r.delete(stream)
    r.delete("bmicro:scratch")
    return {"parts": parts, "dispatcher": whole, "profile": profiles}


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
        "ruamel YAML parse (values.read_value)": lambda f, fn: f.endswith("values.py")
        and fn == "read_value",
        "redis-py commands": lambda f, fn: f.endswith("redis/client.py")
        and fn == "execute_command",
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
            stream=StreamSub(stream, group=group, consumer="noop-1", polling_interval=100,
                             max_records=1),
            ack_policy=AckPolicy.MANUAL, no_reply=True,
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
    return {"entries": len(times), "rate": (len(times) - 1) / span,
            "per_event_ms": span * 1000 / (len(times) - 1)}


def pr_writer_parts(url: str, root: Path, n_services: int, k: int,
                    big_repo: Path | None) -> dict[str, Any]:
    """The pr-writer's git and forge steps, each timed alone, on a fresh scaffolded repo."""
    from ferry.forge import LocalForge
    from ferry.forge.local import read_pulls
    from ferry.gitops import GitOpsRepo

    site = Site(url, "bmicro-pr:", root / "micro-pr")
    names = services(n_services)
    site.scaffold(names)
    gitops = GitOpsRepo(remote=str(site.repo_path), workdir=root / "micro-pr-work")
    forge = LocalForge(site.repo_path)
    gitops.policy()
    steps: dict[str, list[float]] = {"prepare_promotion": [], "open_pr": [], "merge_pr": [],
                                     "find_pr": []}
    git_calls: dict[str, list[int]] = {k_: [] for k_ in steps}
    for i in range(-1, k):  # -1: untimed warm-up (first clone, merge scratch clone)
        s = names[i % n_services]
        digest = digest_of(f"micro-pr-{i}")
        pid = promotion_id(s, digest, "staging")
        branch = f"ferry/staging/{s}/{digest[7:19]}"
        actions: dict[str, Callable[[], Any]] = {
            "find_pr": lambda pid=pid: forge.find_pr(pid),
            "prepare_promotion": lambda s=s, d=digest, b=branch: gitops.prepare_promotion(
                branch=b, service=s, env="staging", digest=d, message=f"Promote {s}"),
            "open_pr": lambda b=branch, pid=pid: forge.open_pr(
                head=b, title="t", body="b", labels=["ferry", "env/staging"], key=pid),
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
            if name == "open_pr":
                pr = result
    out: dict[str, Any] = {
        name: {"p50": statistics.median(v), "mean": statistics.fmean(v),
               "git": statistics.fmean(git_calls[name])}
        for name, v in steps.items()
    }
    pulls: dict[str, Any] = {}
    for label, gitdir in (("small", site.repo_path / ".git"),
                          ("latency", big_repo / ".git" if big_repo else None)):
        if gitdir is None:
            continue
        count = len(read_pulls(gitdir))
        samples = []
        for _ in range(20):
            t = time.perf_counter()
            read_pulls(gitdir, "open")
            samples.append((time.perf_counter() - t) * 1000)
        pulls[label] = {"records": count, "p50": statistics.median(samples)}
    out["read_pulls"] = pulls
    out["k"] = k
    return out
