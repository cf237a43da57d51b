"""Webhook ingress under load: signed deliveries at a steady rate against one `ferry ingress`
process, every one checked for (none lost, none published twice), beside a baseline measured in
the same run: the same deliveries, at the same rate, answered by a bare ASGI app under the same
server (uvicorn) that only reads the body. `python -m bench.ingress` runs this section alone
(`--rate`, `--seconds`) and writes its part of bench/RESULTS.md.

The deliveries cycle through GitHub, Gitea and GitLab pull request events of application
repositories (each a `ferry:previews` event) and Ferry's own CI body (a `ferry:ci` event); one in
ten is sent again with the same delivery id, as a forge's retry, and must publish nothing.

A second section (`--runs N`) measures what the webhook is for: a person merges staging's
promotion pull request on the forge, the forge's webhook reaches the ingress, and the time until
prod's (the successor's) pull request is opened, with gate-evaluator and pr-writer running as
processes. Its baseline, interleaved run by run in the same set-up, publishes the same `pr_merged`
straight onto ferry:changes (what pr-writer does when it merges itself): the difference is what
the webhook path costs."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.env import (
    REGISTRY,
    Site,
    digest_of,
    id_ms,
    machine,
    services,
    summary,
    wait_until,
    write_section,
)
from tests.helpers import free_port

SECRET = "bench-webhook-secret"
MARK_BEGIN = "<!-- bench:ingress begin -->"
MARK_END = "<!-- bench:ingress end -->"
SUCCESSOR_BEGIN = "<!-- bench:ingress-successor begin -->"
SUCCESSOR_END = "<!-- bench:ingress-successor end -->"
GITOPS = "shop/gitops"  # FERRY_FORGE_REPO: the webhooks' repository is the GitOps one
# staging is merged by a person; prod (its successor) has no gates: its PR opens at once.
SUCCESSOR_ENVIRONMENTS = """environments:
  dev: {promote_from: build, auto_merge: true}
  staging: {promote_from: dev, auto_merge: false}
  prod: {promote_from: staging, auto_merge: false}
"""

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


def run_successor(url: str, root: Path, runs: int) -> dict[str, Any]:
    """RUNS webhook runs and RUNS baseline runs, interleaved, one service each (see the module's
    docstring); milliseconds from the delivery sent (or the change published) to prod's
    promotion asked for (the `open` command) and to its pull request opened (`pr_opened`)."""
    import redis

    from bench.env import commit_all
    from ferry.adapters.forge import LocalForge
    from ferry.adapters.forge.http import with_key
    from ferry.adapters.forge.webhooks import signature_headers
    from ferry.adapters.state import PromotionStore
    from ferry.app.webhooks import promotion_change
    from ferry.core.events import Change, CiResult, promotion_id

    names = services(2 * runs)
    site = Site(url, "bsucc:", root / "successor")
    site.scaffold(names)
    policy = site.repo_path / "ferry.yaml"
    text = policy.read_text()
    head, _, rest = text.partition("environments:\n")
    policy.write_text(head + SUCCESSOR_ENVIRONMENTS + rest[rest.index("\n# Approver groups") :])
    commit_all("staging merged by people", site.repo_path)
    port = free_port()
    env = site.env(
        FERRY_WEBHOOK_SECRET=SECRET,
        FERRY_FORGE_REPO=GITOPS,
        FERRY_INGRESS_HOST="127.0.0.1",
        FERRY_INGRESS_PORT=str(port),
        FERRY_INGRESS_RECONCILE_S="0",
        FERRY_CONSUMER="ingress-1",
    )
    r: redis.Redis = site.r
    forge = LocalForge(site.repo_path)
    promotions = PromotionStore(site.bus)
    changes, commands = site.bus.stream("changes"), site.bus.stream("promotions")
    try:
        site.start("gate-evaluator")
        site.start("pr-writer")
        argv = [sys.executable, "-m", "ferry", "ingress"]
        site.procs.append(_serve(argv, env, port, site.logs / "ingress.log"))
        digests = {s: digest_of(f"successor-{s}") for s in names}
        for s in names:  # warm-up: each service's staging pull request open, waiting for a person
            site.bus.publish(CiResult(service=s, digest=digests[s], image=f"{REGISTRY}/{s}"))

        def opened(env_name: str) -> dict[str, dict[str, str]]:
            return {
                f["service"]: f
                for _, f in site.entries("changes")
                if f.get("kind") == "pr_opened" and f.get("env") == env_name
            }

        wait_until(lambda: len(opened("staging")) >= len(names), 300, "staging PRs", poll=0.2)
        staging = opened("staging")
        times: dict[str, dict[str, list[float]]] = {
            "webhook": {"open": [], "pr": [], "answer": []},
            "direct": {"open": [], "pr": []},
        }
        with httpx.Client(timeout=30) as client:
            for i, s in enumerate(names):
                way = "webhook" if i % 2 == 0 else "direct"
                _idle(site)
                pr = forge.merge_pr(int(staging[s]["pr"]))  # a person presses merge on the forge
                pid = promotion_id(s, digests[s], "staging")
                last = (r.xrevrange(changes, count=1) or [(b"0-0", {})])[0][0]
                t_wall, t0 = time.time(), time.perf_counter()
                if way == "webhook":
                    body = json.dumps(
                        {
                            "action": "closed",
                            "number": pr.number,
                            "pull_request": {
                                "number": pr.number,
                                "body": with_key(pr.body, pr.key),
                                "merged": True,
                                "merge_commit_sha": pr.merge_commit,
                                "labels": [],
                            },
                            "repository": {"full_name": GITOPS},
                            "sender": {"login": "carol"},
                        }
                    ).encode()
                    headers = {
                        "Content-Type": "application/json",
                        "X-GitHub-Event": "pull_request",
                        "X-GitHub-Delivery": f"merge-{i}",
                        **signature_headers("github", SECRET, body),
                    }
                    answer = client.post(
                        f"http://127.0.0.1:{port}/webhooks/github", content=body, headers=headers
                    )
                    times[way]["answer"].append((time.perf_counter() - t0) * 1000)
                    if answer.status_code != 202 or answer.json()["published"] != 1:
                        raise RuntimeError(f"the webhook was not taken: {answer.text}")
                else:
                    record = promotions.get(pid)
                    assert record is not None, pid
                    change = promotion_change(
                        pid, record, "pr_merged", pr=pr.number, merge_commit=pr.merge_commit
                    )
                    site.bus.publish_once(Change.key_for(pid, "pr_merged"), change)
                got = _follow(r, changes, last, s, 60)
                times[way]["pr"].append((time.perf_counter() - t0) * 1000)
                command = next(
                    i
                    for i, f in site.entries("promotions")
                    if f.get("service") == s and f.get("target_env") == "prod"
                )
                times[way]["open"].append(id_ms(command) - t_wall * 1000)
                assert got["env"] == "prod"
        return {
            "runs": runs,
            "times": {w: {k: summary(v) for k, v in t.items()} for w, t in times.items()},
            "dlq": r.xlen(site.bus.stream("dlq")),
            "commands": r.xlen(commands),
        }
    finally:
        site.stop()


def _idle(site: Site) -> None:
    def idle() -> bool:
        a = site.group("changes", "gate-evaluator")
        b = site.group("promotions", "pr-writer")
        return all(g.get("lag") == 0 and g.get("pending") == 0 for g in (a, b))

    wait_until(idle, 60, "workers idle", poll=0.01)


def _follow(r: Any, stream: str, last: bytes, service: str, timeout: float) -> dict[str, str]:
    """Block on STREAM after LAST until SERVICE's prod pull request is reported opened."""
    from ferry.core.events import decode_fields

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, entries in r.xread({stream: last}, block=1000) or []:
            for entry_id, raw in entries:
                last = entry_id
                f = decode_fields(raw)
                if (f.get("kind"), f.get("env"), f.get("service")) == (
                    "pr_opened",
                    "prod",
                    service,
                ):
                    return f
    raise TimeoutError(f"{service}: prod's pull request not opened within {timeout:.0f} s")


def render_successor(res: dict[str, Any], info: dict[str, str], command: str) -> str:
    w, d = res["times"]["webhook"], res["times"]["direct"]
    rows = [
        ("**webhook** -> prod's promotion asked for (`open` command)", w["open"]),
        ("**webhook** -> prod's pull request opened (`pr_opened`)", w["pr"]),
        ("baseline: `pr_merged` published -> `open` command", d["open"]),
        ("baseline: `pr_merged` published -> `pr_opened`", d["pr"]),
        ("the ingress's answer to the webhook (202)", w["answer"]),
    ]
    table = "\n".join(
        f"| {name} | {s['count']} | {s['p50']:.0f} | {s['p90']:.0f} | {s['p99']:.0f} | "
        f"{s['max']:.0f} |"
        for name, s in rows
    )
    return f"""{SUCCESSOR_BEGIN}
## (i) Webhook ingress: a person merges staging's PR on the forge -> prod's PR opened

Run: `{command}` on {info["date"]}, {info["nproc"]} CPUs ({info["cpu"]}), 1-minute load average
{info["load"]} when it started (the machine is shared). gate-evaluator, pr-writer and `ferry
ingress` as processes on the embedded Valkey and a local-forge GitOps repository; staging is
merged by people (`auto_merge: false`), prod is promoted from staging without gates. Each run
merges one service's staging pull request on the forge (untimed), then either sends GitHub's
signed `pull_request` `closed` (merged) webhook to the ingress (**webhook**), or, interleaved
with those in the same set-up, publishes the same `pr_merged` straight onto ferry:changes as
pr-writer does after its own merge (**baseline**). Timed from the delivery sent (perf_counter) to
the `pr_opened` of prod read back (XREAD BLOCK), and to the `open` command's entry id (the
server's clock, same machine); workers idle between runs. {res["runs"]} runs each, ms:

| | runs | p50 ms | p90 ms | p99 ms | max ms |
|---|---|---|---|---|---|
{table}

- **Staging's successor promotion starts {w["open"]["p50"]:.0f} ms (median), {w["open"]["p99"]:.0f}
  ms (p99) after the webhook is sent**, beside {d["open"]["p50"]:.0f} / {d["open"]["p99"]:.0f} ms
  when the change is published directly; prod's pull request is open after
  {w["pr"]["p50"]:.0f} / {w["pr"]["p99"]:.0f} ms (baseline {d["pr"]["p50"]:.0f} /
  {d["pr"]["p99"]:.0f} ms). The webhook path differs by
  {w["open"]["p50"] - d["open"]["p50"]:+.0f} ms at the median to the command (HTTP, signature,
  lookup, publish once) and by {w["pr"]["p50"] - d["pr"]["p50"]:+.0f} ms to the pull request
  (pr-writer's git work varies by more than that). With {res["runs"]} runs, p99 is the slowest.
- Dead letters: {res["dlq"]}.
{SUCCESSOR_END}
"""


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


def write(section: str, path: Path, begin: str = MARK_BEGIN, end: str = MARK_END) -> None:
    write_section(section, path, begin, end)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingress", description=__doc__)
    p.add_argument("--rate", type=float, default=200.0, help="deliveries per second (200)")
    p.add_argument("--seconds", type=float, default=30.0, help="how long to send (30)")
    p.add_argument("--runs", type=int, default=30, help="successor runs, each way (30)")
    p.add_argument(
        "--only", choices=["load", "successor"], help="one section (default: both)", default=None
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.runs <= 0:
        p.error("--rate, --seconds and --runs must be positive")
    import redis

    from ferry.adapters.embedded import start_server

    command = "python -m bench.ingress " + " ".join(argv if argv is not None else sys.argv[1:])
    lost = 0
    for part in ("load", "successor"):
        if args.only not in (None, part):
            continue
        server = start_server()
        try:
            info = machine(redis.Redis.from_url(server.connection_url).info("server"))
            with tempfile.TemporaryDirectory(prefix="ferry-bench-ingress-") as tmp:
                if part == "load":
                    res = run(server.connection_url, Path(tmp), args.rate, args.seconds)
                    section = render(res, info, command.strip())
                    lost = res["lost"]
                else:
                    res = run_successor(server.connection_url, Path(tmp), args.runs)
                    section = render_successor(res, info, command.strip())
        finally:
            server.stop()
        print(section)
        marks = (MARK_BEGIN, MARK_END) if part == "load" else (SUCCESSOR_BEGIN, SUCCESSOR_END)
        write(section, args.out, *marks)
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
