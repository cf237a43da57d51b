"""Run workers: one replica in this process (`ferry worker NAME`), or all of them as processes
(`ferry up`), with the embedded server when no FERRY_REDIS_URL is given."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from ferry.adapters import embedded
from ferry.runtime.consumer import serve
from ferry.runtime.logging import configure, get_logger, scrub_text
from ferry.runtime.settings import Settings
from ferry.runtime.worker import WorkerSpec


def worker_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group="ferry.workers"))


def load_worker(name: str) -> WorkerSpec:
    for ep in entry_points(group="ferry.workers"):
        if ep.name == name:
            spec = ep.load()
            assert isinstance(spec, WorkerSpec)
            return spec
    raise ValueError(f"unknown worker {name!r}: choose one of {', '.join(worker_names())}")


def ensure_server(settings: Settings, *, persist: bool) -> tuple[str, Any]:
    """The Redis URL to use, starting (and recording) the embedded server if there is none."""
    url = settings.redis_url or embedded.recorded_url(settings)
    if url:
        return url, None
    server = embedded.start_server(settings.home / "valkey" if persist else None, persist=persist)
    url = server.connection_url
    embedded.record_url(settings, url)
    get_logger().info(
        "embedded server started",
        redis=url,
        recorded_in=str(settings.redis_url_file),
        data_dir=str(server.data_dir),
    )
    return url, server


def run_worker(name: str, settings: Settings) -> None:
    spec = load_worker(name)
    if settings.redis_cluster and not settings.redis_url:
        from ferry.runtime.resources import ConfigError

        raise ConfigError(
            "FERRY_REDIS_CLUSTER=1 needs FERRY_REDIS_URL, one node of the cluster "
            "(the embedded server is a single server)"
        )
    configure(settings.log_level, settings.log_format)
    url, server = ensure_server(settings, persist=True)
    try:
        asyncio.run(_serve_until_signal(spec, settings, url))
    finally:
        if server is not None:
            embedded.forget_url(settings, url)
            server.stop()


async def _serve_until_signal(spec: WorkerSpec, settings: Settings, url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(spec, settings, url, stop=stop)


def spawn_worker(
    name: str, env: dict[str, str], log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start one replica of worker NAME as its own process (its output appended to LOG)."""
    return spawn_ferry(["worker", name], env, log)


def spawn_ferry(
    args: list[str], env: dict[str, str], log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Run `ferry ARGS` as its own process (its output appended to LOG)."""
    if log is None:
        return subprocess.Popen([sys.executable, "-m", "ferry", *args], env=env)
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "ferry", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM every process, then wait for each; SIGKILL what is still there after TIMEOUT."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class AlreadyUp(RuntimeError):
    """`ferry up` already runs on this FERRY_HOME."""


def _up_files(settings: Settings) -> tuple[Path, Path]:
    return settings.home / "up.lock", settings.home / "up.json"


def up_state(settings: Settings) -> dict[str, Any] | None:
    """What `ferry up` on this FERRY_HOME runs ({pid, redis, started, workers: {name: pid}}),
    or None when it does not run (its lock is free, whatever a stale file says)."""
    lock_path, state_path = _up_files(settings)
    if not lock_path.exists():
        return None
    with open(lock_path, "a") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                return dict(json.loads(state_path.read_text()))
            except (OSError, ValueError):
                return {"pid": None, "workers": {}}  # starting: the state is not written yet
        fcntl.flock(probe, fcntl.LOCK_UN)
    return None


def _hold_up_lock(settings: Settings) -> Any:
    """Take this FERRY_HOME's `ferry up` lock for the life of the process, or refuse."""
    settings.home.mkdir(parents=True, exist_ok=True)
    lock_path, _ = _up_files(settings)
    handle = open(lock_path, "a")  # noqa: SIM115 - held until the process ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        running = up_state(settings) or {}
        raise AlreadyUp(
            f"ferry up already runs on FERRY_HOME={settings.home} (pid {running.get('pid')}): "
            "`ferry ps` shows it, `ferry down` stops it; another FERRY_HOME runs a second set"
        ) from None
    return handle


def _write_up_state(settings: Settings, url: str, procs: dict[str, Any], started: str) -> None:
    _, state_path = _up_files(settings)
    state = {
        "pid": os.getpid(),
        "redis": url,
        "started": started,
        "workers": {name: proc.pid for name, proc in procs.items()},
    }
    tmp = state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, sort_keys=True))
    tmp.replace(state_path)


def _joined(url: str, settings: Settings, names: Iterable[str]) -> bool:
    """Has every worker in NAMES joined its consumer group (it reads its stream)?"""
    import redis

    client = redis.Redis.from_url(url)
    try:
        for name in names:
            spec = load_worker(name)
            streams = list(spec.handlers) or list(spec.joins)
            groups = client.xinfo_groups(settings.stream(streams[0]))
            if not any(g["name"].decode() == name for g in groups):
                return False
        return True
    except redis.RedisError:
        return False  # the stream does not exist until the worker creates it
    finally:
        client.close()


def run_up(settings: Settings) -> None:
    """All the workers, the board and the webhook ingress, each its own process, until Ctrl-C,
    SIGTERM or `ferry down`; one set per FERRY_HOME."""
    configure(settings.log_level, settings.log_format)
    log = get_logger()
    lock = _hold_up_lock(settings)
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    url, server = ensure_server(settings, persist=True)
    env = {**os.environ, "FERRY_REDIS_URL": url}
    envs = {}
    servers = {"board": ["board"], "ingress": ["ingress"]}  # serve HTTP; no consumer group
    args = {name: ["worker", name] for name in worker_names()} | servers
    for i, name in enumerate(args):
        envs[name] = dict(env)
        if settings.http_port:
            # One port each: the workers share this machine.
            envs[name]["FERRY_HTTP_PORT"] = str(settings.http_port + i)
    procs = {name: spawn_ferry(args[name], envs[name]) for name in envs}
    _write_up_state(settings, url, procs, started_at)
    board = f"http://{settings.board_host}:{settings.board_port}/"
    ingress = f"http://{settings.ingress_host}:{settings.ingress_port}/webhooks/"
    log.info(
        "ferry up",
        redis=url,
        workers={n: p.pid for n, p in procs.items()},
        board=board,
        ingress=ingress,
    )
    ready = False
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    # A worker that keeps dying is restarted after 1 s, 2 s, 4 s ... (at most 60 s), so that a
    # persistent fault is visible in the log without a restart storm; a minute of good health
    # resets its delay.
    started = {name: time.monotonic() for name in procs}
    delay = {name: 1.0 for name in procs}
    due: dict[str, float] = {}
    try:
        while not stopping:
            now = time.monotonic()
            for name, proc in list(procs.items()):
                if proc.poll() is None:
                    continue
                if name not in due:
                    if now - started[name] > 60:
                        delay[name] = 1.0
                    log.warning(
                        "worker exited", worker=name, code=proc.returncode, restart_in_s=delay[name]
                    )
                    due[name] = now + delay[name]
                    delay[name] = min(delay[name] * 2, 60.0)
                elif now >= due[name]:
                    del due[name]
                    procs[name] = spawn_ferry(args[name], envs[name])
                    started[name] = now
                    _write_up_state(settings, url, procs, started_at)
            if not ready and _joined(url, settings, [n for n in procs if n not in servers]):
                ready = True
                workers = ", ".join(f"{n} (pid {p.pid})" for n, p in procs.items())
                print(
                    scrub_text(
                        f"ferry is up: {workers} on {url}; the board at {board}, "
                        f"webhooks in at {ingress}. "
                        "Stop it with Ctrl-C or `ferry down`; "
                        "`ferry ps` shows what runs."
                    ),
                    flush=True,
                )
            time.sleep(0.2)
    finally:
        stop_processes(procs.values())
        _up_files(settings)[1].unlink(missing_ok=True)
        if server is not None:
            embedded.forget_url(settings, url)
            server.stop()
        log.info("ferry stopped")
        lock.close()  # last: `ferry down` returns once everything above is done
