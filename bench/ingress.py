"""Webhook ingress under load: signed deliveries at a steady rate against one `ferry ingress`
process, every one checked for (none lost, none published twice), beside a baseline measured in
the same run: the same deliveries, at the same rate, answered by a bare ASGI app under the same
server (uvicorn) that only reads the body. `python -m bench.ingress` runs this section alone
(`--rate`, `--seconds`) and writes its part of bench/RESULTS.md.

The deliveries cycle through GitHub, Gitea and GitLab pull request events of application
repositories (each a `ferry:previews` event) and Ferry's own CI body (a `ferry:ci` event); one in
ten is sent again with the same delivery id, as a forge's retry, and must publish nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.env import digest_of, machine, summary, wait_until

SECRET = "bench-webhook-secret"
MARK_BEGIN = "<!-- bench:ingress begin -->"
MARK_END = "<!-- bench:ingress end -->"

BARE_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 202,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"published": 1}'})
"""


def deliveries(n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """N deliveries (endpoint, body, headers); every tenth repeats the one before it."""
    from ferry.adapters.forge.webhooks import signature_headers

    out: list[tuple[str, bytes, dict[str, str]]] = []
    for i in range(n):
        if i % 10 == 9:
            out.append(out[-1])
            continue
        kind = i % 4
        number = i + 1
        if kind == 0:
            endpoint = "ci"
            payload: dict[str, Any] = {
                "service": f"svc-{i % 50:02d}",
                "digest": digest_of(f"bench-{i}"),
                "status": "success",
                "event_id": f"build-{i}",
            }
            headers = {}
        elif kind in (1, 2):
            # GitHub and Gitea send the same shape of pull request event
            endpoint = "github" if kind == 1 else "gitea"
            payload = {
                "action": "opened",
                "number": number,
                "pull_request": {"number": number, "body": "", "labels": [{"name": "preview"}]},
                "repository": {"full_name": "shop/web" if kind == 1 else "shop/api"},
                "sender": {"login": "dev"},
            }
            name = "GitHub" if kind == 1 else "Gitea"
            headers = {f"X-{name}-Event": "pull_request", f"X-{name}-Delivery": f"{endpoint}-{i}"}
        else:
            endpoint = "gitlab"
            payload = {
                "object_kind": "merge_request",
                "user": {"username": "dev"},
                "project": {"path_with_namespace": "shop/worker"},
                "object_attributes": {"iid": number, "action": "open", "description": ""},
                "labels": [{"title": "preview"}],
            }
            headers = {"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Event-UUID": f"gl-{i}"}
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            **headers,
            **signature_headers(endpoint, SECRET, body),
        }
        out.append((endpoint, body, headers))
    return out


async def _load(
    base: str, items: list[tuple[str, bytes, dict[str, str]]], rate: float
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    answers: list[dict[str, Any]] = []
    behind: list[float] = []
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        start = time.perf_counter()

        async def one(i: int, item: tuple[str, bytes, dict[str, str]]) -> None:
            endpoint, body, headers = item
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            t = time.perf_counter()
            behind.append(t - due)
            try:
                r = await client.post(f"{base}/webhooks/{endpoint}", content=body, headers=headers)
                status = r.status_code
                if status == 202:
                    answers.append(r.json())
            except httpx.HTTPError:
                status = 0
            latencies.append((time.perf_counter() - t) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
        took = time.perf_counter() - start
    return {
        "latencies": latencies,
        "statuses": statuses,
        "answers": answers,
        "seconds": took,
        "behind_ms": max(behind) * 1000 if behind else 0.0,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(argv: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    wait_until(up, 30, f"{argv[-1]} to answer")
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(url: str, root: Path, rate: float = 200.0, seconds: float = 30.0) -> dict[str, Any]:
    """Both runs against the server at URL; returns the figures."""
    import redis

    n = int(rate * seconds)
    items = deliveries(n)
    unique = {(endpoint, body) for endpoint, body, _ in items}
    prefix = "bingress:"
    port = free_port()
    env = {
        **os.environ,
        "FERRY_REDIS_URL": url,
        "FERRY_STREAM_PREFIX": prefix,
        "FERRY_HOME": str(root / "home"),
        "FERRY_WEBHOOK_SECRET": SECRET,
        "FERRY_INGRESS_HOST": "127.0.0.1",
        "FERRY_INGRESS_PORT": str(port),
        "FERRY_INGRESS_RECONCILE_S": "0",
        "FERRY_LOG_LEVEL": "WARNING",
    }
    proc = _serve([sys.executable, "-m", "ferry", "ingress"], env, port, root / "ingress.log")
    try:
        ferry = asyncio.run(_load(f"http://127.0.0.1:{port}", items, rate))
    finally:
        _stop(proc)
    r = redis.Redis.from_url(url)
    published = {s: r.xlen(prefix + s) for s in ("ci", "previews", "audit", "dlq")}
    bare_port = free_port()
    (root / "bare_app.py").write_text(BARE_APP)
    bare_argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(root),
        "--host",
        "127.0.0.1",
        "--port",
        str(bare_port),
        "--log-level",
        "warning",
        "--no-access-log",
        "bare_app:app",
    ]
    bare_proc = _serve(bare_argv, dict(os.environ), bare_port, root / "bare.log")
    try:
        bare = asyncio.run(_load(f"http://127.0.0.1:{bare_port}", items, rate))
    finally:
        _stop(bare_proc)
    answered = sum(a["published"] for a in ferry["answers"])

    def figures(run: dict[str, Any]) -> dict[str, Any]:
        return {**summary(run["latencies"]), "took": run["seconds"], "behind": run["behind_ms"]}

    return {
        "rate": rate,
        "seconds": seconds,
        "deliveries": n,
        "unique": len(unique),
        "retries": n - len(unique),
        "statuses": ferry["statuses"],
        "published_answers": answered,
        "published": published,
        "lost": len(unique) - published["ci"] - published["previews"],
        "ferry": figures(ferry),
        "bare": figures(bare),
    }


def render(res: dict[str, Any], info: dict[str, str], command: str) -> str:
    f, b = res["ferry"], res["bare"]
    rows = [
        ("**Ferry ingress**: verify, parse, publish once in Redis", f),
        ("bare ASGI app under uvicorn: read the body, answer 202", b),
    ]
    table = "\n".join(
        f"| {name} | {s['count']} | {s['p50']:.1f} | {s['p90']:.1f} | {s['p99']:.1f} | "
        f"{s['max']:.1f} |"
        for name, s in rows
    )
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(res["statuses"].items()))
    return f"""{MARK_BEGIN}
## (i) Webhook ingress: {res["rate"]:g} deliveries/s for {res["seconds"]:g} s, one process

Run: `{command}` on {info["date"]}, {info["nproc"]} CPUs ({info["cpu"]}), 1-minute load average
{info["load"]} when it started (the machine is shared). One `ferry ingress` process (uvicorn, one
worker) on the embedded Valkey; the client (httpx, asyncio, in the bench process) sends
{res["deliveries"]} signed deliveries on a fixed schedule (at most {f["behind"]:.0f} ms behind
it), cycling through GitHub, Gitea and GitLab pull request events and Ferry's CI body; every tenth
is a retry of the one before (same delivery id). Handling time = request sent to answer received
(perf_counter, ms). The baseline answers the same deliveries, on the same schedule, from a bare
ASGI app under the same server (uvicorn) that only reads the body.

| | count | p50 ms | p90 ms | p99 ms | max ms |
|---|---|---|---|---|---|
{table}

- **p99 {f["p99"]:.1f} ms** for Ferry vs {b["p99"]:.1f} ms for the bare app
  (p50 {f["p50"]:.1f} vs {b["p50"]:.1f} ms); answers: {statuses}.
- **None lost**: {res["unique"]} distinct deliveries, {res["published"]["ci"]} `ferry:ci` +
  {res["published"]["previews"]} `ferry:previews` entries (lost: {res["lost"]}); the
  {res["retries"]} retries published nothing; dead letters {res["published"]["dlq"]}.
- Sending took {f["took"]:.1f} s (Ferry) and {b["took"]:.1f} s (baseline) for a {res["seconds"]:g} s
  schedule.
{MARK_END}
"""


def write(section: str, path: Path) -> None:
    text = path.read_text() if path.exists() else "# Ferry benchmarks\n"
    pattern = re.compile(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END) + "\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingress", description=__doc__)
    p.add_argument("--rate", type=float, default=200.0, help="deliveries per second (200)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long to send (30)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0:
        p.error("--rate and --seconds must be positive")
    import redis

    from ferry.adapters.embedded import start_server

    server = start_server()
    try:
        info = machine(redis.Redis.from_url(server.connection_url).info("server"))
        with tempfile.TemporaryDirectory(prefix="ferry-bench-ingress-") as tmp:
            res = run(server.connection_url, Path(tmp), args.rate, args.seconds)
    finally:
        server.stop()
    command = "python -m bench.ingress " + " ".join(argv if argv is not None else sys.argv[1:])
    section = render(res, info, command.strip())
    print(section)
    write(section, args.out)
    return 0 if res["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
