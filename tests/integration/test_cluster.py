"""Ferry's key layout on Redis Cluster: every script and transaction touches keys of one hash
slot, and the streams spread over slots.

A server in cluster mode that serves every slot itself refuses, as a three-node cluster would,
any script or MULTI/EXEC whose keys are in different slots (CROSSSLOT), while a client that
knows nothing of clusters (FastStream's) still works: the workers run unchanged against it, so
the whole flow proves the layout. Then the Bus adapter, the CLI, the board and the workers run
against a real three-node cluster with redis-py's cluster client (FERRY_REDIS_CLUSTER=1): the
workers read their streams with a loop of their own there, not FastStream's (docs/redis.md)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.cluster import key_slot

from ferry.adapters.bus import Bus
from ferry.adapters.due import DueTimes
from ferry.adapters.forge.budget import Budget, Limits
from ferry.adapters.forge.webhooks import signature_headers
from ferry.adapters.preview_store import PreviewStore
from ferry.adapters.state import CandidateStore, PromotionStore
from ferry.app.replay import retry
from ferry.core.events import CiResult, PreviewEvent, PromotionCommand
from ferry.runtime.settings import Settings
from tests.faults.test_lock_renewal import a_handler_slower_than_the_claim_idle_time_keeps_its_entry
from tests.helpers import Cluster, digest_of, wait_until
from tests.ingress_server import spawn_ingress
from tests.servers import Server, cluster_nodes, free_port


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


def errors_seen(client: redis.Redis) -> dict[str, object]:
    """The server's count of each error it answered (INFO errorstats), e.g. CROSSSLOT."""
    return dict(client.info("errorstats"))


@pytest.fixture
def one_node_cluster(tmp_path: Path) -> Iterator[Server]:
    [node] = cluster_nodes(tmp_path / "servers", 1)
    try:
        yield node
    finally:
        node.stop()


def test_the_server_refuses_a_cross_slot_transaction(one_node_cluster: Server) -> None:
    """The check the flow below relies on is live: this server says CROSSSLOT."""
    client = redis.Redis(port=one_node_cluster.port)
    assert slot("ferry:ci") != slot("ferry:dlq")
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        with client.pipeline(transaction=True) as pipe:
            pipe.xadd("ferry:dlq", {"a": "1"})
            pipe.xadd("ferry:ci", {"a": "1"})
            pipe.execute()
    assert any("CROSSSLOT" in name for name in errors_seen(client)), errors_seen(client)
    # A script's declared keys too (the keys a script builds itself, it does not check: see
    # test_keys_written_together_share_a_slot_and_streams_spread for the one that does).
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        client.eval("return 1", 2, "ferry:ci", "ferry:dlq")


def test_a_promotion_webhooks_dead_letters_and_previews_keep_each_script_in_one_slot(
    one_node_cluster: Server, tmp_path: Path
) -> None:
    c = Cluster(redis_url=one_node_cluster.url(), prefix="ferry:", root=tmp_path)
    try:
        c.init_repo(["api", "web"])
        for name in ("gate-evaluator", "pr-writer", "canary-watcher", "preview-reaper"):
            c.start(name)
        ingress, base = spawn_ingress(c.env(FERRY_WEBHOOK_SECRET="s3cret"), c.logs / "ingress.log")
        ingress.log_path = c.logs / "ingress.log"  # type: ignore[attr-defined]
        c.procs.append(ingress)
        d = digest_of("api-1")
        c.build("api", d)
        c.wait_pinned("api", "dev", d)
        c.build("api", d, env="dev", check="integration")
        c.wait_pinned("api", "staging", d)  # the prod promotion waits for a person: a due time

        # A dead letter (a service with no values file), then retried by hand.
        bad = c.build("db", digest_of("db-1"))
        wait_until(lambda: [x for x in c.dead_letters() if x["entry_id"] == bad], 15, "a letter")
        assert len(retry(c.bus, None)) == 1
        again = wait_until(
            lambda: [x for x in c.dead_letters() if x["entry_id"] != bad], 15, "a new letter"
        )
        assert len(again) == 1 and len(c.dead_letters()) == 1  # the first one left the DLQ

        # Webhooks: one published once per delivery, one refused (counted in its window).
        w = digest_of("web-1")
        body = json.dumps({"service": "web", "digest": w, "status": "success"}).encode()
        signed = {**signature_headers("ci", "s3cret", body), "X-Ferry-Delivery": "d-1"}
        assert httpx.post(f"{base}/webhooks/ci", content=body, headers=signed).status_code == 202
        forged = {**signature_headers("ci", "wrong", body), "X-Ferry-Delivery": "d-2"}
        assert httpx.post(f"{base}/webhooks/ci", content=body, headers=forged).status_code == 401
        c.wait_pinned("web", "dev", w)

        # A preview: its record, index sets and due time are one transaction.
        c.bus.publish(
            PreviewEvent(kind="opened", repo="shop/web", pr=7, team="web", labels=["preview"])
        )
        store = PreviewStore(c.bus)
        wait_until(lambda: store.due.when("shop/web#7"), 20, "the preview's due time")
        assert store.due.when("shop/web#7") is not None

        # No script or transaction was refused; a script failed only when not yet loaded.
        errors = errors_seen(c.bus.redis)
        assert not {"errorstat_CROSSSLOT", "errorstat_EXECABORT"} & set(errors), errors
        stats = c.bus.redis.info("commandstats")
        for name in ("cmdstat_eval", "cmdstat_evalsha", "cmdstat_exec"):
            assert stats[name]["rejected_calls"] == 0, (name, stats[name])
        assert stats["cmdstat_exec"]["failed_calls"] == 0
        assert stats["cmdstat_eval"]["failed_calls"] == 0
        noscript = errors.get("errorstat_NOSCRIPT", {}).get("count", 0)
        assert stats["cmdstat_evalsha"]["failed_calls"] == noscript, (stats, errors)
        for proc in c.procs:
            assert "CROSSSLOT" not in c.log_of(proc)
    finally:
        c.stop_all()


def test_keys_written_together_share_a_slot_and_streams_spread() -> None:
    settings = Settings(stream_prefix="ferry:")
    streams = [
        "ci",
        "signals",
        "holds",
        "promotions",
        "changes",
        "canary",
        "previews",
        "audit",
        "dlq",
    ]
    slots = {slot(settings.stream(s)) for s in streams}
    assert len(slots) == len(streams)  # nine streams, nine slots: spread over the nodes
    once = settings.near(settings.stream("promotions"), "once", "promotion:p1:open")
    assert once == "ferry:once:{ferry:promotions}:promotion:p1:open"
    assert slot(once) == slot("ferry:promotions")
    error = settings.near(settings.stream("ci"), "error", "gate-evaluator", "1-0")
    assert slot(error) == slot("ferry:ci")
    sent = settings.key("notified", "slack", "ferry:changes:1-0")
    assert slot(settings.near(sent, "notified", "sending")) == slot(sent)
    budget = Budget(redis.Redis(), "ferry:forge:github:api.github.com:", Limits(0, 0, 0))
    assert len({slot(k) for k in budget.keys}) == 1
    # The claim script builds each member's lease key itself, from a prefix: same slot.
    bus = Bus(settings, "redis://127.0.0.1:1/0")  # no connection is made
    for due in (DueTimes(bus, "gate-evaluator"), PreviewStore(bus).due):
        keys = [due.key, due.held_key, due.wake_key, due.lease_key("api|dev|staging")]
        assert len({slot(k) for k in keys}) == 1, keys
    previews = PreviewStore(bus)
    keys = [previews._key("all"), previews._key("record", "a#1"), previews._team_key("web")]
    assert {slot(k) for k in keys} == {slot(previews.due.key)}


def test_a_prefix_with_a_brace_is_refused() -> None:
    with pytest.raises(ValueError, match="may not contain"):
        Settings(stream_prefix="{ferry}:")


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    root = tmp_path_factory.mktemp("cluster")
    try:
        Server(root, "--cluster-enabled", "yes", "--cluster-port", str(free_port())).stop()
    except AssertionError as e:  # the server exits at once when it cannot do cluster mode
        why = f"the embedded server cannot run in cluster mode: {str(e)[-200:]}"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the cluster tests; {why}")
        pytest.skip(why)
    nodes = cluster_nodes(root, 3)
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def test_the_bus_on_a_three_node_cluster(three_nodes: list[Server]) -> None:
    """Publish, publish once, dead letters and their retry, locks, due times, the state stores
    and the forge budget, through redis-py's cluster client, with the streams on three nodes."""
    settings = Settings(stream_prefix="ferry:", redis_cluster=True, lock_ttl_ms=2000)
    bus = Bus(settings, three_nodes[0].url())
    owners = {bus.redis.get_node_from_key(bus.stream(s)).port for s in ("ci", "dlq", "changes")}
    assert len(owners) > 1  # the streams this test writes really live on different nodes

    d = digest_of("cluster")
    first = bus.publish(CiResult(service="api", digest=d))
    command = PromotionCommand(
        kind="open",
        service="api",
        digest=d,
        promotion_id="p1",
        source_env="dev",
        target_env="staging",
    )
    assert bus.emit(command) is not None
    assert bus.emit(command) is None  # once
    bus.forget_once(command.once_key or "", command.on_stream)
    assert bus.emit(command) is not None

    bus.ensure_group("ci", "gate-evaluator")
    read = bus.redis.xreadgroup("gate-evaluator", "c1", {bus.stream("ci"): ">"}, count=1)
    assert read[0][1][0][0].decode() == first
    bus.remember_error("gate-evaluator", "ci", first, "boom")
    bus.dead_letter("ci", "gate-evaluator", first, {"service": "api"}, "boom", 5)
    bus.dead_letter("ci", "gate-evaluator", first, {"service": "api"}, "boom", 6)  # redelivered
    letters = bus.redis.xrange(bus.stream("dlq"))
    assert len(letters) == 1
    assert bus.redis.xpending(bus.stream("ci"), "gate-evaluator")["pending"] == 0
    assert bus.last_error("gate-evaluator", "ci", first) is None
    assert retry(bus, None) == [letters[0][0].decode()]
    assert bus.redis.xlen(bus.stream("dlq")) == 0 and bus.redis.xlen(bus.stream("ci")) == 2
    assert bus.prune_consumers("ci", "gate-evaluator", 0) == ["c1"]

    with bus.lock("decide:api:staging"):
        assert bus.redis.exists(settings.key("lock", "decide:api:staging"))
    assert not bus.redis.exists(settings.key("lock", "decide:api:staging"))

    due = DueTimes(bus, "gate-evaluator")
    now = datetime.now(UTC)
    due.set("api|dev|staging", now - timedelta(seconds=1))
    claim = due.claim(now, lease_ms=5000)
    assert claim.members == ["api|dev|staging"]
    due.set("api|dev|staging", now + timedelta(hours=1))  # another replica's word, kept aside
    assert due.renew("api|dev|staging", claim.token, 5000, now)
    assert due.release("api|dev|staging", claim.token)
    assert due.when("api|dev|staging") == pytest.approx((now + timedelta(hours=1)).timestamp())

    previews = PreviewStore(bus)
    bus.publish(PreviewEvent(kind="opened", repo="shop/web", pr=7, team="web"))

    def opened(record):  # noqa: ANN001, ANN202
        record.live_team, record.due = "web", 1.0
        return "ok"

    assert previews.change("shop/web", 7, opened) == "ok"
    assert previews.team_members("web") == ["shop/web#7"] and previews.keys() == ["shop/web#7"]
    assert previews.due.claim(2.0, 5000).members == ["shop/web#7"]

    assert CandidateStore(bus).choose("api", "staging", d, 1.0, "p1") == 1
    assert PromotionStore(bus).ask_again("p1") == 1
    budget = Budget(bus.redis, settings.key("forge", "github", "x") + ":", Limits(1, 0, 0))
    budget.acquire(write=True)
    assert budget._ask(True, take=False) > 0  # the minute's one write is taken


def test_a_worker_on_a_cluster_needs_a_node_to_start_from(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from tests.helpers import run_cli

    monkeypatch.delenv("FERRY_REDIS_URL", raising=False)
    monkeypatch.setenv("FERRY_HOME", str(tmp_path / "home"))  # no embedded server recorded
    monkeypatch.setenv("FERRY_GITOPS_REPO", str(tmp_path))
    monkeypatch.setenv("FERRY_REDIS_CLUSTER", "1")
    code, _, err = run_cli(capsys, "worker", "gate-evaluator")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "FERRY_REDIS_CLUSTER=1 needs FERRY_REDIS_URL" in err


def test_the_workers_on_a_three_node_cluster(three_nodes: list[Server], tmp_path: Path) -> None:
    """gate-evaluator and pr-writer as processes with FERRY_REDIS_CLUSTER=1, their streams on
    different nodes: a build reaches dev, then staging; a malformed entry becomes a dead letter;
    a replica killed holding an entry leaves it to another, which finishes it once."""
    from ferry.runtime.runner import load_worker

    c = Cluster(redis_url=three_nodes[0].url(), prefix="flow:", root=tmp_path, redis_cluster=True)
    r = c.bus.redis
    owners = {s: r.get_node_from_key(c.bus.stream(s)).port for s in ("ci", "promotions", "dlq")}
    assert len(set(owners.values())) > 1, owners  # the streams really live on different nodes
    reads = {n.port: _xreadgroups(n) for n in three_nodes}
    try:
        # The first pr-writer dies (SIGKILL) having opened the pull request, before merging it.
        doomed = c.init_repo(["api"]).start("pr-writer", FERRY_FAILPOINTS="pr-writer.after-open")
        gate = c.start("gate-evaluator")
        d = digest_of("api-on-a-cluster")
        c.build("api", d)
        assert doomed.wait(timeout=20) == -signal.SIGKILL
        assert r.xpending(c.bus.stream("promotions"), "pr-writer")["pending"] == 1
        c.start("pr-writer")  # reclaims the dead replica's entry after FERRY_CLAIM_IDLE_MS
        c.wait_pinned("api", "dev", d)
        c.build("api", d, env="dev", check="integration")
        c.wait_pinned("api", "staging", d)

        # Every connection to the node serving ci is cut, the workers' blocked reads among them,
        # and gate-evaluator's group is lost: it reads again, and the next entry is handled.
        ci_node = redis.Redis(port=owners["ci"])
        assert ci_node.client_kill_filter(_type="normal", skipme=True) > 0
        assert r.xgroup_destroy(c.bus.stream("ci"), "gate-evaluator") == 1
        bad = r.xadd(c.bus.stream("ci"), {"service": "api", "digest": "not-a-digest"}).decode()
        [letter] = wait_until(c.dead_letters, 15, "a dead letter")
        assert letter["entry_id"] == bad and letter["worker"] == "gate-evaluator"

        merged = wait_until(lambda: len(c.changes("pr_merged")) == 2 and c.changes("pr_merged"))
        assert sorted(m["env"] for m in merged) == ["dev", "staging"]
        prs = {p.title.split(":")[0]: p.state for p in c.forge.list_prs()}
        # The prod pull request stays open: it waits for a person's approval.
        assert prs == {f"Promote api to {e}": s for e, s in STATES.items()}, prs
        assert len([o for o in c.changes("pr_opened") if o["env"] == "dev"]) == 1
        assert r.xpending(c.bus.stream("ci"), "gate-evaluator")["pending"] == 0
        assert r.xpending(c.bus.stream("promotions"), "pr-writer")["pending"] == 0
        # The workers read each stream on the node that serves it, and no node serves no stream
        # of theirs here: the one with dlq, canary and previews answered no read.
        handled = [*load_worker("gate-evaluator").handlers, *load_worker("pr-writer").handlers]
        serving = {r.get_node_from_key(c.bus.stream(s)).port for s in handled}
        assert len(serving) == 2 and owners["dlq"] not in serving, (serving, owners)
        grown = {n.port for n in three_nodes if _xreadgroups(n) > reads[n.port]}
        assert grown == serving
        for proc in c.procs:
            assert "MOVED" not in c.log_of(proc) and "CROSSSLOT" not in c.log_of(proc)
        assert "consumer group recreated" in c.log_of(gate)
        # Asked to stop, each live worker does, its readers let go (not killed after a timeout).
        live = [proc for proc in c.procs if proc.poll() is None]
        assert len(live) == 2
        for proc in live:
            proc.terminate()
        for proc in live:
            assert proc.wait(timeout=15) == 0, c.log_of(proc)
            assert "worker stopped" in c.log_of(proc)
    finally:
        c.stop_all()


def test_a_slow_handler_keeps_its_entry_on_a_three_node_cluster(
    three_nodes: list[Server], tmp_path: Path
) -> None:
    """The readers of our own on a cluster keep the entries they are working on as they do on
    one server: a push slower than the claim idle time, a second replica, the
    command delivered once and not dead-lettered (tests/faults/test_lock_renewal.py)."""
    c = Cluster(redis_url=three_nodes[0].url(), prefix="slow:", root=tmp_path, redis_cluster=True)
    try:
        a_handler_slower_than_the_claim_idle_time_keeps_its_entry(c)
        assert all('"reader": "ferry"' in c.log_of(p) for p in c.procs)
    finally:
        c.stop_all()


STATES = {"dev": "merged", "staging": "merged", "prod": "open"}


def _xreadgroups(node: Server) -> int:
    """How many XREADGROUP calls NODE has answered."""
    stats = redis.Redis(port=node.port).info("commandstats")
    return int(stats.get("cmdstat_xreadgroup", {}).get("calls", 0))


def test_the_cli_on_a_three_node_cluster(
    three_nodes: list[Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What people run (publish, hold, status, explain, audit, dlq ls) works with Ferry's
    cluster client: the batched reads of status go to the nodes that serve their keys."""
    from ferry.adapters.scaffold import scaffold
    from tests.helpers import run_cli

    scaffold(tmp_path / "gitops", ["api", "web"])
    for name, value in {
        "FERRY_REDIS_URL": three_nodes[1].url(),
        "FERRY_REDIS_CLUSTER": "1",
        "FERRY_STREAM_PREFIX": "cli:",
        "FERRY_GITOPS_REPO": str(tmp_path / "gitops"),
        "FERRY_HOME": str(tmp_path / "home"),
    }.items():
        monkeypatch.setenv(name, value)
    d = digest_of("cli-on-a-cluster")

    def ok(*argv: str) -> str:
        code, out, err = run_cli(capsys, *argv)
        assert code == 0, (argv, err)
        return out

    ok("publish", "ci", "--service", "api", "--digest", d)
    ok("hold", "api", "prod", "--as", "sre-oncall-1", "--reason", "freeze")
    assert "api" in ok("status") and "api" in ok("explain", "api", "dev")
    ok("audit")
    assert "no dead letters" in ok("dlq", "ls")
    bus = Bus(Settings(stream_prefix="cli:", redis_cluster=True), three_nodes[1].url())
    assert bus.redis.xlen("cli:ci") == 1 and bus.redis.xlen("cli:holds") == 1


def _touched(url: str, settings: Settings, service: str, shorts: tuple[str, ...]) -> set[str]:
    """The streams among SHORTS whose new entry about SERVICE reached a page of the board's
    live reader (each published again until it does: the reader starts at the newest entry)."""
    import asyncio

    from ferry.board.live import Hub

    bus = Bus(settings, url)

    async def run() -> set[str]:
        hub = Hub(settings, url)
        page: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        hub.pages.add(page)  # what subscribe() does for each open page
        await hub.start()
        seen = set()
        try:
            for short in shorts:
                for _ in range(50):
                    bus.redis.xadd(bus.stream(short), {"service": service, "kind": "x"})
                    try:
                        news = await asyncio.wait_for(page.get(), 0.5)
                    except TimeoutError:
                        continue
                    if service in news["services"]:
                        seen.add(short)
                        break
        finally:
            await hub.stop()
        return seen

    return asyncio.run(run())


def test_the_boards_live_reader_reads_each_stream_in_its_own_slot(
    one_node_cluster: Server, three_nodes: list[Server]
) -> None:
    shorts = ("ci", "signals", "changes", "promotions", "canary")
    plain = Settings(stream_prefix="live:")
    assert _touched(one_node_cluster.url(), plain, "api", shorts) == set(shorts)
    assert "errorstat_CROSSSLOT" not in errors_seen(redis.Redis(port=one_node_cluster.port))
    on_nodes = Settings(stream_prefix="live:", redis_cluster=True)
    assert _touched(three_nodes[2].url(), on_nodes, "web", shorts) == set(shorts)
