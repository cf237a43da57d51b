"""`ferry demo`: the whole flow on embedded parts, told as a short story, then a summary."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ferry.adapters import embedded
from ferry.adapters.bus import Bus
from ferry.core.events import CiResult, InvalidEvent, parse
from ferry.runtime.runner import spawn_ferry, spawn_worker, stop_processes
from ferry.runtime.settings import Settings

WORKERS = ("gate-evaluator", "pr-writer", "canary-watcher", "preview-reaper")


def fake_digest(text: str) -> str:
    """A stand-in for the digest a registry would report for an image built from TEXT."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def say(text: str) -> None:
    typer.echo(text)


def wait_for(
    what: str, check: Callable[[], bool], timeout: float = 30.0, since: float | None = None
) -> float:
    """Wait until CHECK holds; return the seconds since SINCE (default: now)."""
    start = time.monotonic()
    since = start if since is None else since
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - since
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _board_port(wanted: int) -> int:
    """WANTED if nothing listens there, else a free port: a second demo must not fail on it."""
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", wanted))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(*, keep: bool = False, serve: bool = False) -> int:
    t0 = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="ferry-demo-"))
    home, repo_path, logs = scratch / "home", scratch / "gitops", scratch / "logs"
    logs.mkdir(parents=True)
    from ferry.adapters.forge import LocalForge
    from ferry.adapters.scaffold import scaffold
    from ferry.app.reports import status_table

    say("== Ferry demo: build once, promote the digest, one pull request per step ==")
    server = embedded.start_server(scratch / "valkey")
    url = server.connection_url
    say(f"embedded Valkey at {url}")
    scaffold(repo_path, ["api", "web"])
    say(f"GitOps repository scaffolded by `ferry init` at {repo_path}")
    env = {
        **os.environ,
        "FERRY_REDIS_URL": url,
        "FERRY_GITOPS_REPO": str(repo_path),
        "FERRY_HOME": str(home),
    }
    settings = Settings(redis_url=url, gitops_repo=str(repo_path), home=home)
    bus = Bus(settings, url)
    procs = []
    for name in WORKERS:
        procs.append(spawn_worker(name, env, logs / f"{name}.log"))
    say(f"workers started as separate processes: {', '.join(WORKERS)} (logs in {logs})")
    port = _board_port(settings.board_port)
    board = f"http://127.0.0.1:{port}/"
    procs.append(spawn_ferry(["board", "--port", str(port)], env, logs / "board.log"))
    code = 1
    try:
        for name in WORKERS:
            wait_for(f"{name} to join its groups", functools.partial(_joined, bus, name), 20)
        code = _story(bus, settings, repo_path, status_table, LocalForge(repo_path))
        say(f"\ndemo finished in {time.monotonic() - t0:.1f}s")
        if serve:
            say(f"The board (every service x environment, live): {board}")
            say("Ctrl-C stops the demo, its workers and the board.")
            _until_interrupted()
    except TimeoutError as e:
        say(f"demo failed: {e}; see the worker logs in {logs}")
        keep = True
    finally:
        stop_processes(procs)
        server.stop()
        if keep:
            say(f"scratch directory kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if not serve:
        say(f"The board served this demo at {board} (`ferry demo --serve` keeps it up)")
    return code


def _until_interrupted() -> None:
    import signal

    def _stop(*_: object) -> None:
        raise KeyboardInterrupt

    # SIGTERM too (a background job ignores Ctrl-C): the workers and the board stop with it.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("")


def _pinned(repo: Any, service: str, env: str, digest: str) -> bool:
    return bool(repo.pinned(service, env) == digest)


def _joined(bus: Bus, worker: str) -> bool:
    stream = {
        "gate-evaluator": "ci",
        "pr-writer": "promotions",
        "canary-watcher": "canary",
        "preview-reaper": "previews",
    }[worker]
    try:
        groups = bus.redis.xinfo_groups(bus.stream(stream))
    except Exception:  # noqa: BLE001 - the stream does not exist until the worker creates it
        return False
    return any(g["name"].decode() == worker for g in groups)


def _story(bus: Bus, settings: Settings, repo_path: Path, status_table, forge) -> int:  # noqa: ANN001
    from ferry.adapters.gitops import GitOpsRepo
    from ferry.app.explain import explain, render
    from ferry.app.reports import audit_records, short_subject

    repo = GitOpsRepo(remote=str(repo_path), workdir=settings.home / "work" / "demo")
    api, web, web_bad = fake_digest("api@1"), fake_digest("web@1"), fake_digest("web@2")
    registry = "registry.example.com/shop"

    say("\n1. CI builds api and web and publishes the digests")
    built = time.monotonic()
    for service, digest in (("api", api), ("web", web)):
        bus.publish(
            CiResult(
                service=service,
                digest=digest,
                image=f"{registry}/{service}",
                commit="4f1c2ab",
                author="alice",
            )
        )
        say(f"   published build: {service} {digest[:19]}")
    bus.publish(CiResult(service="web", digest=web_bad, status="failure", commit="9e8d7c6"))
    say(f"   published build: web {web_bad[:19]} FAILED (it must not move)")

    say("\n2. A pipeline sends a tag where a digest belongs")
    try:
        parse("ci", {"kind": "ci", "service": "api", "digest": "api:latest"})
    except InvalidEvent as e:
        say(f"   `ferry publish` refuses it at once: {e}")
    bus.redis.xadd(
        bus.stream("ci"),
        {"kind": "ci", "service": "api", "digest": "api:latest", "status": "success"},
    )
    say("   the same entry sent with a plain XADD goes to the dead-letter stream:")
    waited = wait_for("the dead letter", lambda: bus.redis.xlen(bus.stream("dlq")) >= 1)
    letter = bus.redis.xrange(bus.stream("dlq"))[-1][1]
    say(f"   ferry:dlq ({waited:.2f}s): {letter[b'error'].decode()}")

    for service, digest in (("api", api), ("web", web)):
        waited = wait_for(
            f"{service} in dev",
            functools.partial(_pinned, repo, service, "dev", digest),
            since=built,
        )
        say(f"   {service} reached dev by merged pull request {waited:.2f}s after its build")

    say("\n3. CI runs integration tests against dev: green for api, red for web")
    tested = time.monotonic()
    bus.publish(
        CiResult(
            service="api",
            digest=api,
            env="dev",
            check="integration",
            url="https://ci.example.com/runs/101",
        )
    )
    bus.publish(
        CiResult(
            service="web",
            digest=web,
            env="dev",
            check="integration",
            status="failure",
            url="https://ci.example.com/runs/102",
        )
    )
    waited = wait_for("api in staging", lambda: repo.pinned("api", "staging") == api, since=tested)
    say(
        f"   api reached staging by merged pull request {waited:.2f}s after its green CI; "
        "web stays in dev"
    )

    time.sleep(0.5)  # let the audit of web's refusal land before the summary
    say("\nSummary: digest pinned on main per service and environment")
    table = status_table(settings)
    envs = ["dev", "staging", "prod"]
    say("   " + "SERVICE".ljust(9) + "".join(e.upper().ljust(22) for e in envs))
    for service, pins in table.items():
        say("   " + service.ljust(9) + "".join((pins[e] or "-")[:19].ljust(22) for e in envs))
    say("\nPull requests on the local forge (`ferry pr ls`)")
    for pr in forge.list_prs():
        say(f"   #{pr.number} {pr.state:7} {pr.title}")
    say("\nWhat Ferry decided about web, and why (`ferry audit --service web`)")
    for r in audit_records(settings, "web", 10):
        say(f"   {r.worker:15} {short_subject(r.subject):28} {r.outcome:9} {r.reason}")
    say("\nWhy web is not in staging (`ferry explain web staging`)")
    for line in render(explain(repo, bus, forge, "web", "staging")):
        say(f"  {line}")
    ok = (
        table["api"]["staging"] == api
        and table["web"]["dev"] == web
        and table["web"]["staging"] is None
        and bus.redis.xlen(bus.stream("dlq")) == 1
    )
    say("\nall expectations met" if ok else "\nUNEXPECTED outcome: see above")
    return 0 if ok else 1
