"""A small Ferry installation for tests: a scaffolded GitOps repo, worker processes, and handles
on the bus, the repo and the forge. Everything real: Redis, git, separate OS processes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ferry.adapters.bus import Bus
from ferry.adapters.git import git
from ferry.core.events import CiResult, PromotionCommand, decode_fields, promotion_id
from ferry.core.values import set_digest
from ferry.runtime.runner import spawn_worker, stop_processes
from ferry.runtime.settings import Settings
from ferry.runtime.worker import WorkerSpec

REGISTRY = "registry.example.com/shop"


def run_cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """Run `ferry ARGV` in this process; return (exit code, stdout, stderr)."""
    from ferry.cli.main import main

    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def commit_by_hand(repo: Path, clone: Path, message: str, change: Callable[[Path], None]) -> None:
    """What a person does to the GitOps repo: pull into their own CLONE, CHANGE files there,
    commit everything and push main."""
    if not clone.exists():
        git("clone", "-q", str(repo), str(clone))
    git("pull", "-q", cwd=clone)
    change(clone)
    git("add", "-A", cwd=clone)
    git("commit", "-qm", message, cwd=clone)
    git("push", "-q", "origin", "main", cwd=clone)


def pin_digest(clone: Path, env: str, service: str, digest: str) -> None:
    """In CLONE, pin DIGEST in SERVICE's values file for ENV, the one line Ferry would change."""
    path = clone / "envs" / env / service / "values.yaml"
    path.write_text(set_digest(path.read_text(), "image.digest", digest))


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def open_in_dev(service: str, digest: str) -> PromotionCommand:
    """The command pr-writer gets for an auto-merged promotion of DIGEST of SERVICE into dev
    (what gate-evaluator asks for after a green build), for the tests and benches that ask
    pr-writer directly."""
    return PromotionCommand(
        kind="open",
        promotion_id=promotion_id(service, digest, "dev"),
        service=service,
        digest=digest,
        source_env="build",
        target_env="dev",
        auto_merge=True,
    )


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Cluster:
    def __init__(
        self, *, redis_url: str, prefix: str, root: Path, redis_cluster: bool = False
    ) -> None:
        """REDIS_CLUSTER: REDIS_URL is one node of a Redis Cluster (the test's client and the
        workers' use redis-py's cluster client: FERRY_REDIS_CLUSTER=1)."""
        self.redis_url = redis_url
        self.redis_cluster = redis_cluster
        self.prefix = prefix
        self.root = root
        self.repo_path = root / "gitops"
        self.home = root / "home"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.claim_idle_ms = 1000
        self.settings = Settings(
            redis_url=redis_url,
            stream_prefix=prefix,
            gitops_repo=str(self.repo_path),
            home=self.home,
            consumer="test",
            claim_idle_ms=1000,
            lock_ttl_ms=800,
            redis_cluster=redis_cluster,
        )
        self.bus = Bus(self.settings, redis_url)
        self._repo: Any = None
        self._n = 0

    # --- the GitOps repository ----------------------------------------------------------------

    def commit_by_hand(self, message: str, change: Callable[[Path], None]) -> None:
        commit_by_hand(self.repo_path, self.root / "person", message, change)

    def init_repo(self, services: list[str] | None = None) -> Cluster:
        from ferry.adapters.scaffold import scaffold

        scaffold(self.repo_path, services or ["api", "web"])
        return self

    @property
    def repo(self) -> Any:
        from ferry.adapters.gitops import GitOpsRepo

        if self._repo is None:
            self._repo = GitOpsRepo(remote=str(self.repo_path), workdir=self.root / "test-clone")
        return self._repo

    @property
    def forge(self) -> Any:
        from ferry.adapters.forge import LocalForge

        return LocalForge(self.repo_path)

    # --- worker processes ---------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "FERRY_REDIS_URL": self.redis_url,
            "FERRY_STREAM_PREFIX": self.prefix,
            "FERRY_GITOPS_REPO": str(self.repo_path),
            "FERRY_HOME": str(self.home),
            "FERRY_CLAIM_IDLE_MS": str(self.claim_idle_ms),
            "FERRY_LOCK_TTL_MS": str(self.claim_idle_ms * 8 // 10),
            "FERRY_TICK_S": "0.5",
            "FERRY_REDIS_CLUSTER": "1" if self.redis_cluster else "0",
            **extra,
        }

    def start(self, name: str, **extra_env: str) -> subprocess.Popen[bytes]:
        proc = self.start_doomed(name, **extra_env)
        wait_until(
            lambda: self._joined(name, f"{name}-{self._n}") or proc.poll() is not None,
            30,
            f"{name} to start",
        )
        assert proc.poll() is None, self.log_of(proc)
        return proc

    def start_doomed(self, name: str, **extra_env: str) -> subprocess.Popen[bytes]:
        """Start worker NAME without waiting for it to join its groups: armed with a failpoint
        (FERRY_FAILPOINTS in EXTRA_ENV), it may die before."""
        self._n += 1
        log = self.logs / f"{name}-{self._n}.log"
        proc = spawn_worker(name, self.env(FERRY_CONSUMER=f"{name}-{self._n}", **extra_env), log)
        proc.log_path = log  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def _joined(self, group: str, consumer: str) -> bool:
        from ferry.runtime.runner import load_worker

        spec = load_worker(group)
        streams = list(spec.handlers) or list(spec.joins)
        try:
            groups = self.bus.redis.xinfo_groups(self.bus.stream(streams[0]))
        except Exception:  # noqa: BLE001
            return False
        if not any(g["name"].decode() == group for g in groups):
            return False
        if not spec.handlers:
            return True
        consumers = self.bus.redis.xinfo_consumers(self.bus.stream(streams[0]), group)
        return any(c["name"].decode() == consumer for c in consumers)

    def caught_up(self, short: str, group: str) -> bool:
        """GROUP has read everything on stream SHORT and has nothing pending (each entry it took
        was handled to its end)."""
        groups = self.bus.redis.xinfo_groups(self.bus.stream(short))
        info = next((g for g in groups if g["name"].decode() == group), None)
        return info is not None and info["lag"] == 0 and info["pending"] == 0

    def start_all(self) -> None:
        for name in ("gate-evaluator", "pr-writer", "canary-watcher", "preview-reaper"):
            self.start(name)

    @staticmethod
    def log_of(proc: subprocess.Popen[bytes]) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        proc.send_signal(sig)
        proc.wait(timeout=15)

    def stop_all(self) -> None:
        stop_processes(self.procs)

    # --- events -------------------------------------------------------------------------------

    def build(self, service: str, digest: str, **kw: Any) -> str:
        kw.setdefault("image", f"{REGISTRY}/{service}")
        return self.bus.publish(CiResult(service=service, digest=digest, **kw))

    def entries(self, short: str) -> list[dict[str, str]]:
        return [decode_fields(f) for _, f in self.bus.redis.xrange(self.bus.stream(short))]

    def changes(self, kind: str | None = None) -> list[dict[str, str]]:
        return [c for c in self.entries("changes") if kind is None or c["kind"] == kind]

    def dead_letters(self) -> list[dict[str, str]]:
        return self.entries("dlq")

    def merged_pr(self, match: Callable[[Any], bool], timeout: float = 10) -> Any:
        """The pull request MATCH picks, once the forge has recorded it merged (the local forge
        moves main first, so a test that saw the pin may be a moment early)."""
        return wait_until(
            lambda: next(
                (p for p in self.forge.list_prs() if match(p) and p.state == "merged"), None
            ),
            timeout,
            "the pull request recorded merged",
        )

    def wait_pinned(self, service: str, env: str, digest: str, timeout: float = 30) -> None:
        wait_until(
            lambda: self.repo.pinned(service, env) == digest,
            timeout,
            f"{service} {env} pinned to {digest[:19]}",
        )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_board(cluster: Cluster) -> str:
    """`ferry board` as its own process on a free port (stopped with the cluster): its URL."""
    import sys

    import httpx

    port = free_port()
    log = cluster.logs / "board.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ferry", "board", "--port", str(port)],
            env=cluster.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc.log_path = log  # type: ignore[attr-defined]
    cluster.procs.append(proc)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(answers, 30, "the board to answer")
    return url


@contextlib.contextmanager
def running(spec: WorkerSpec, settings: Settings, url: str) -> Iterator[Callable[[], None]]:
    """One replica of SPEC served in this process (a thread with its own event loop) for the
    block, which gets a function that asks it to stop (as SIGTERM does); stopped at the end."""
    from ferry.runtime.consumer import serve

    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(
            serve(spec, settings, url, stop=stop, ready=started.set)
        ),
        daemon=True,
    )
    thread.start()
    assert started.wait(15)

    def ask_to_stop() -> None:
        loop.call_soon_threadsafe(stop.set)

    try:
        yield ask_to_stop
    finally:
        ask_to_stop()
        thread.join(15)


@contextlib.contextmanager
def counting_round_trips() -> Iterator[list[int]]:
    """Count the requests this process sends to Redis: one per command, one per pipeline."""
    import redis.connection

    box = [0]
    original = redis.connection.Connection.send_packed_command

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        box[0] += 1
        return original(self, *args, **kwargs)

    redis.connection.Connection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield box
    finally:
        redis.connection.Connection.send_packed_command = original  # type: ignore[method-assign]
