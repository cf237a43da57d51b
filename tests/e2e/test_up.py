"""`ferry up` on embedded defaults: it starts Valkey, records its URL under FERRY_HOME so other
commands find it, runs the workers, the board and the webhook ingress as processes, and cleans up
on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from ferry.adapters.scaffold import scaffold
from tests.helpers import REGISTRY, digest_of, free_port, wait_until


def _get(url: str) -> dict | None:
    try:
        return httpx.get(url).json()
    except httpx.TransportError:
        return None


def _text(url: str) -> str | None:
    try:
        return httpx.get(url).text
    except httpx.TransportError:
        return None


def ferry(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry", *args], env=env, capture_output=True, text=True, timeout=60
    )


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def worker_pids(pid: int) -> dict[int, str]:
    """Child processes running `ferry worker NAME`, by pid."""
    out = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True
    )
    found = {}
    for line in out.stdout.splitlines():
        child, _, args = line.strip().partition(" ")
        if " worker " in args:
            found[int(child)] = args.rsplit(" ", 1)[-1]
    return found


def test_ferry_up_runs_everything_and_other_commands_find_it(tmp_path: Path) -> None:
    repo, home = tmp_path / "gitops", tmp_path / "home"
    scaffold(repo, ["api"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    board, ingress = free_port(), free_port()
    env.update(
        FERRY_HOME=str(home),
        FERRY_GITOPS_REPO=str(repo),
        FERRY_BOARD_PORT=str(board),
        FERRY_INGRESS_PORT=str(ingress),
    )
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    up = subprocess.Popen(
        [sys.executable, "-m", "ferry", "up"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url_file = home / "redis.url"
        wait_until(url_file.exists, 30, "the recorded URL")
        assert url_file.read_text().startswith("redis://127.0.0.1:")
        # valkey + five workers + the board + the ingress, each its own process
        wait_until(lambda: len(children_of(up.pid)) >= 8, 30, "eight child processes")
        d = digest_of("up")
        wait_until(lambda: ferry("status", "--json", env=env).returncode == 0, 30, "status")
        published = ferry(
            "publish",
            "ci",
            "--service",
            "api",
            "--digest",
            d,
            "--image",
            f"{REGISTRY}/api",
            env=env,
        )
        assert published.returncode == 0, published.stderr
        wait_until(
            lambda: (
                json.loads(ferry("status", "--json", env=env).stdout)["services"]["api"]["dev"] == d
            ),
            30,
            "api in dev",
        )
        grid = wait_until(lambda: _get(f"http://127.0.0.1:{board}/api/grid"), 30, "the board")
        assert grid["services"]["api"]["dev"]["pinned"] == d
        # the webhook ingress answers on FERRY_INGRESS_PORT
        health = wait_until(lambda: _text(f"http://127.0.0.1:{ingress}/healthz"), 30, "ingress")
        assert health == "ok\n"
        unsigned = httpx.post(f"http://127.0.0.1:{ingress}/webhooks/ci", content=b"{}")
        assert unsigned.status_code == 401  # no secret configured: refused, said in one line
        prs = ferry("pr", "ls", env=env)
        assert "merged" in prs.stdout and "Promote api to dev" in prs.stdout
        # A worker that dies is started again.
        before = worker_pids(up.pid)
        assert sorted(before.values()) == sorted(
            ["gate-evaluator", "pr-writer", "canary-watcher", "preview-reaper", "notifier"]
        )
        victim = next(p for p, name in before.items() if name == "pr-writer")
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: (
                "pr-writer" in worker_pids(up.pid).values() and victim not in worker_pids(up.pid)
            ),
            20,
            "pr-writer restarted",
        )
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)
    assert up.returncode == 0
    assert not (home / "redis.url").exists()
    text = (tmp_path / "up.log").read_text()
    assert "embedded server started" in text and "ferry stopped" in text
    assert '"event": "worker exited"' in text and '"worker": "pr-writer"' in text
    # After `ferry up` stops, commands say what to do instead of hanging.
    after = ferry("publish", "ci", "--service", "api", "--digest", digest_of("x"), env=env)
    assert after.returncode == 2 and "no Redis to talk to" in after.stderr


def test_ferry_up_says_when_it_is_ready_runs_once_per_home_and_ferry_down_stops_it(
    tmp_path: Path,
) -> None:
    repo, home = tmp_path / "gitops", tmp_path / "home"
    scaffold(repo, ["api"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env.update(
        FERRY_HOME=str(home),
        FERRY_GITOPS_REPO=str(repo),
        FERRY_BOARD_PORT=str(free_port()),
        FERRY_INGRESS_PORT=str(free_port()),
    )
    out_path = tmp_path / "up.out"
    with open(out_path, "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "ferry", "up"], env=env, stdout=out, stderr=subprocess.DEVNULL
        )
    try:
        wait_until(lambda: "ferry is up" in out_path.read_text(), 60, "ferry up to say it is ready")
        said = out_path.read_text()
        assert "`ferry down`" in said and "pr-writer (pid" in said
        assert f"webhooks in at http://127.0.0.1:{env['FERRY_INGRESS_PORT']}/webhooks/" in said
        second = ferry("up", env=env)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"error: ferry up already runs on FERRY_HOME={home} (pid {up.pid}): `ferry ps` "
            "shows it, `ferry down` stops it; another FERRY_HOME runs a second set"
        ]
        shown = json.loads(ferry("ps", "--json", env=env).stdout)
        assert shown["running"] is True and shown["pid"] == up.pid
        # ferry up runs the board and the ingress beside the workers; ps lists them with them
        assert sorted(shown["workers"]) == sorted(
            [*worker_pids(up.pid).values(), "board", "ingress"]
        )
        assert all(w["alive"] for w in shown["workers"].values())
        assert "pr-writer" in ferry("ps", env=env).stdout
        stopped = ferry("down", env=env)
        assert stopped.returncode == 0 and f"stopped ferry up (pid {up.pid})" in stopped.stdout
        up.wait(timeout=30)
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.wait(timeout=30)
    assert up.returncode == 0
    assert json.loads(ferry("ps", "--json", env=env).stdout)["running"] is False
    assert "nothing to stop" in ferry("down", env=env).stdout
