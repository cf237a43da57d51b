"""The Redis users Ferry ships (deploy/base/redis/users.acl, started by start.sh beside it): each
process can do its job under its own user, and no more. A real server loads the shipped file;
the only thing the test adds is an administrator of its own, to read the server's ACL LOG."""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from ferry.adapters.bus import Bus
from ferry.adapters.due import DueTimes
from ferry.adapters.forge.webhooks import signature_headers
from ferry.adapters.preview_store import PreviewStore
from ferry.app.board import Query, grid, story
from ferry.core.events import CiResult, Hold, PreviewEvent, PromotionCommand, Signal
from ferry.runtime.settings import Settings
from tests.helpers import Cluster, digest_of, run_cli, wait_until
from tests.ingress_server import spawn_ingress
from tests.servers import Server, cluster_nodes, redis_server_binary

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "base" / "redis"
USERS = (
    "gate-evaluator",
    "pr-writer",
    "canary-watcher",
    "preview-reaper",
    "notifier",
    "ingress",
    "board",
    "ci",
    "people",
    "operator",
    "keda",
)
ADMIN = ("test-admin", secrets.token_hex(8))


def shipped_users(root: Path) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The shipped users.acl and start.sh, with an administrator of the test's own added: the
    command that starts a server with them, its environment, and each user's password."""
    shutil.copytree(SHIPPED, root / "redis")
    with (root / "redis" / "users.acl").open("a") as f:
        f.write(f"user {ADMIN[0]} on >{ADMIN[1]} ~* &* +@all\n")
    passwords = {user: secrets.token_hex(12) for user in USERS}
    env = {f"REDIS_PASSWORD_{u.upper().replace('-', '_')}": p for u, p in passwords.items()}
    env["TMPDIR"] = str(root)  # start.sh writes the ACL file with the passwords there
    return ["sh", str(root / "redis" / "start.sh")], env, passwords


class AclServer:
    def __init__(self, root: Path, binary: str | None = None) -> None:
        launcher, env, self.passwords = shipped_users(root)
        self.server = Server(root, launcher=launcher, env=env, binary=binary)
        self.admin = redis.Redis(port=self.server.port, username=ADMIN[0], password=ADMIN[1])

    def url(self, user: str) -> str:
        return self.server.url(f"ferry-{user}", self.passwords[user])

    def client(self, user: str) -> Any:
        return redis.Redis.from_url(self.url(user))

    def denials(self) -> list[str]:
        """What the server refused to Ferry's users since the last reset, one line each."""
        found = []
        for e in self.admin.acl_log(count=1000):
            if str(e["username"]).startswith("ferry-"):
                cmd = str(e.get("client-info", "")).partition(" cmd=")[2].split(" ")[0]
                found.append(f"{e['username']}: {e['reason']} {e['object']} ({cmd})")
        return found


@pytest.fixture(scope="module")
def acl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclServer]:
    server = AclServer(tmp_path_factory.mktemp("acl"))
    try:
        yield server
    finally:
        server.server.stop()


def test_redis_7_loads_the_shipped_users(tmp_path: Path) -> None:
    """The compose file and the manifests run Redis 7: it accepts every rule of the file."""
    server = AclServer(tmp_path, binary=redis_server_binary())
    try:
        users = server.admin.acl_users()
        assert {f"ferry-{u}" for u in USERS} <= set(users)
        assert server.client("ci").xadd("ferry:ci", {"kind": "ci"})
    finally:
        server.server.stop()


def test_start_sh_leaves_a_user_without_password_off_and_refuses_an_unsafe_one(
    tmp_path: Path,
) -> None:
    import subprocess

    out = tmp_path / "users.acl"
    env = {"FERRY_ACL_FILE": str(out), "REDIS_SERVER": "true", "REDIS_PASSWORD_CI": "s3cret"}
    subprocess.run(["sh", str(SHIPPED / "start.sh")], env=env, check=True)
    lines = out.read_text().splitlines()
    assert not [line for line in lines if line.startswith("#")]
    assert any(line.startswith("user ferry-ci on >s3cret ") for line in lines)
    assert any(line.startswith("user ferry-people off ") for line in lines)
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    env["REDIS_PASSWORD_CI"] = "a@b"
    run = subprocess.run(["sh", str(SHIPPED / "start.sh")], env=env, capture_output=True)
    assert run.returncode == 2 and b"REDIS_PASSWORD_CI must be URL-safe" in run.stderr


FORBIDDEN = [
    # CI producers add builds and check results to ferry:ci, and do nothing else.
    ("ci", "XADD", "ferry:signals", "*", "kind", "approval"),
    ("ci", "XADD", "ferry:promotions", "*", "kind", "open"),
    ("ci", "XRANGE", "ferry:ci", "-", "+"),
    ("ci", "SET", "ferry:once:{ferry:ci}:x", "1"),
    ("ci", "DEL", "ferry:ci"),
    # Workers: no stream they have no business with.
    ("pr-writer", "XADD", "ferry:ci", "*", "kind", "ci"),
    ("pr-writer", "XADD", "ferry:signals", "*", "kind", "approval"),
    ("pr-writer", "XREADGROUP", "GROUP", "g", "c", "STREAMS", "ferry:ci", ">"),
    ("preview-reaper", "XADD", "ferry:promotions", "*", "kind", "open"),
    ("preview-reaper", "HSET", "ferry:candidate:api:prod", "fence", "9"),
    ("notifier", "XADD", "ferry:promotions", "*", "kind", "open"),
    ("canary-watcher", "XADD", "ferry:ci", "*", "kind", "ci"),
    ("canary-watcher", "HSET", "ferry:words:api:prod:sha256:x", "alice", "{}"),
    ("gate-evaluator", "XADD", "ferry:canary", "*", "kind", "x"),
    ("gate-evaluator", "SET", "ferry:notified:slack:x", "1"),
    ("ingress", "XADD", "ferry:promotions", "*", "kind", "open"),
    ("ingress", "XREADGROUP", "GROUP", "g", "c", "STREAMS", "ferry:ci", ">"),
    # People: signals and holds, and reading.
    ("people", "XADD", "ferry:ci", "*", "kind", "ci"),
    ("people", "XADD", "ferry:promotions", "*", "kind", "open"),
    ("people", "HSET", "ferry:words:api:prod:sha256:x", "alice", "{}"),
    # The board writes nothing; KEDA reads the lag of two groups.
    ("board", "XADD", "ferry:signals", "*", "kind", "approval"),
    ("board", "SET", "ferry:lock:x", "1"),
    ("keda", "XINFO", "GROUPS", "ferry:signals"),
    ("keda", "XADD", "ferry:ci", "*", "kind", "ci"),
    # Nobody may administer the server.
    ("operator", "FLUSHALL"),
    ("operator", "CONFIG", "SET", "appendonly", "no"),
    ("operator", "ACL", "SETUSER", "ferry-ci", "+@all"),
    ("operator", "KEYS", "*"),
]


@pytest.mark.parametrize(
    ("user", "command"),
    [(f[0], f[1:]) for f in FORBIDDEN],
    ids=lambda v: v if isinstance(v, str) else " ".join(v[:2]),
)
def test_a_user_cannot_do_what_is_not_its_job(acl: AclServer, user: str, command: tuple) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        acl.client(user).execute_command(*command)


def test_without_logging_in_only_ping_answers(acl: AclServer) -> None:
    anonymous = redis.Redis(port=acl.server.port)
    assert anonymous.ping()
    with pytest.raises(redis.exceptions.NoPermissionError):
        anonymous.get("ferry:candidate:api:prod")


def test_a_refusal_from_the_cli_is_one_line(
    acl: AclServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FERRY_REDIS_URL", acl.url("ci"))
    code, _, err = run_cli(
        capsys, "approve", "api", digest_of("x"), "--env", "prod", "--as", "alice", "--no-check",
    )  # fmt: skip
    assert code != 0 and len(err.strip().splitlines()) == 1, err
    assert "Redis refused" in err and acl.passwords["ci"] not in err


def test_every_process_does_its_job_under_its_own_user(
    acl: AclServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    acl.admin.acl_log_reset()
    # The test's own eyes (waiting, reading what happened) are the operator's.
    c = Cluster(redis_url=acl.url("operator"), prefix="ferry:", root=tmp_path)
    ingress = None
    try:
        c.init_repo(["api", "web"])
        for name in ("gate-evaluator", "pr-writer", "canary-watcher", "preview-reaper", "notifier"):
            c.start(name, FERRY_REDIS_URL=acl.url(name))
        secret = "webhook-" + secrets.token_hex(8)
        ingress, base = spawn_ingress(
            c.env(FERRY_REDIS_URL=acl.url("ingress"), FERRY_WEBHOOK_SECRET=secret),
            c.logs / "ingress.log",
        )
        settings = Settings(stream_prefix="ferry:")
        as_ci = Bus(settings, acl.url("ci"))
        as_people = Bus(settings, acl.url("people"))

        # A build from CI reaches dev; its green checks there take it to staging.
        d = digest_of("api-acl")
        as_ci.publish(CiResult(service="api", digest=d, image="registry.example.com/shop/api"))
        c.wait_pinned("api", "dev", d)
        monkeypatch.setenv("FERRY_REDIS_URL", acl.url("ci"))
        monkeypatch.setenv("FERRY_GITOPS_REPO", str(c.repo_path))
        code, out, err = run_cli(
            capsys, "publish", "ci", "--service", "api", "--digest", d, "--env", "dev",
            "--check", "integration",
        )  # fmt: skip
        assert code == 0, err
        c.wait_pinned("api", "staging", d)

        # A webhook from CI, through the ingress (which also ran its reconcile pass at start).
        w = digest_of("web-acl")
        body = json.dumps({"service": "web", "digest": w, "status": "success"}).encode()
        headers = {**signature_headers("ci", secret, body), "X-Ferry-Delivery": "d-1"}
        answer = httpx.post(f"{base}/webhooks/ci", content=body, headers=headers, timeout=10)
        assert answer.status_code == 202 and answer.json()["published"] == 1, answer.text
        c.wait_pinned("web", "dev", w)

        # People: an approval for prod and a hold, recorded by gate-evaluator.
        as_people.publish(
            Signal(kind="approval", service="api", digest=d, env="prod", actor="release-lead")
        )
        as_people.publish(Hold(kind="hold", env="prod", actor="sre-oncall-1", reason="freeze"))
        wait_until(
            lambda: {"approval", "hold"} <= {a["action"] for a in c.entries("audit")},
            20,
            "the approval and the hold recorded",
        )

        # A preview (what `ferry publish preview` sends, as the operator), tracked by the reaper.
        c.bus.publish(
            PreviewEvent(kind="opened", repo="shop/web", pr=7, team="web", labels=["preview"])
        )
        wait_until(lambda: PreviewStore(c.bus).due.when("shop/web#7"), 20, "the preview tracked")

        # A build of a service with no values file: gate-evaluator makes it a dead letter (its
        # own error note, the letter published once, the entry acknowledged), the notifier reads
        # it, and the operator puts it back (where it is refused again).
        bad = as_ci.publish(CiResult(service="db", digest=digest_of("db")))
        wait_until(lambda: [x for x in c.dead_letters() if x["entry_id"] == bad], 20, "a letter")
        monkeypatch.setenv("FERRY_REDIS_URL", acl.url("operator"))
        code, out, err = run_cli(capsys, "dlq", "retry", "--all")
        assert code == 0 and out.strip() == "retried 1 dead letter", err
        wait_until(
            lambda: [x for x in c.dead_letters() if x["entry_id"] != bad], 20, "the letter again"
        )
        assert run_cli(capsys, "replay", "ci", "--dry-run")[0] == 0
        gate = Bus(settings, acl.url("gate-evaluator"))
        assert gate.prune_consumers("ci", "gate-evaluator", 10**9) == []

        # Every group read and acknowledged all it was given.
        def drained() -> bool:
            for short, group in [
                ("ci", "gate-evaluator"),
                ("signals", "gate-evaluator"),
                ("holds", "gate-evaluator"),
                ("promotions", "pr-writer"),
                ("changes", "canary-watcher"),
                ("changes", "notifier"),
                ("signals", "notifier"),
                ("previews", "preview-reaper"),
                ("dlq", "notifier"),
            ]:
                info = {
                    g["name"].decode(): g for g in c.bus.redis.xinfo_groups(c.bus.stream(short))
                }[group]
                if info["pending"] or info["lag"]:
                    return False
            return True

        wait_until(drained, 20, "every group drained")

        # The board reads what it shows under its own user.
        as_board = Bus(settings, acl.url("board"))
        page = grid(c.repo, as_board, Query(), datetime.now(UTC))
        assert page.rows and story(as_board, "api").steps

        # people read what the CLI shows
        monkeypatch.setenv("FERRY_REDIS_URL", acl.url("people"))
        code, out, err = run_cli(capsys, "status")
        assert code == 0 and "api" in out, err

        assert len(c.dead_letters()) == 1  # the retried build's, and no other
        # The one refusal allowed: a producer that may only add cannot trim by age (Bus.trim_old
        # stops asking); its stream is trimmed by length in its XADD, and by age by other writers.
        trims = ("ferry-ci: command evalsha", "ferry-people: command evalsha")
        assert [d for d in acl.denials() if not d.startswith(trims)] == []
        for proc in c.procs:
            assert "NOPERM" not in c.log_of(proc)
    except AssertionError as e:
        # What the server refused, and to whom: the first thing to read when this fails.
        raise AssertionError(f"{e}\nrefused: {acl.denials()}") from e
    finally:
        if ingress is not None:
            ingress.terminate()
            ingress.wait(10)
        c.stop_all()


def test_a_url_with_a_user_and_password_is_scrubbed() -> None:
    from ferry.runtime.logging import scrub_text

    settings = Settings(redis_url="redis://ferry-ci:s3cr3t-pw@redis:6379/0")
    assert "s3cr3t-pw" in settings.secret_values()
    said = scrub_text("cannot reach redis://ferry-ci:s3cr3t-pw@redis:6379/0 (s3cr3t-pw)")
    assert "s3cr3t-pw" not in said and "redis:6379" in said


def test_the_users_work_on_a_three_node_cluster(tmp_path: Path) -> None:
    """redis-py's cluster client finds the nodes and slots under a worker's or CI's user, and
    the rules hold on every node."""
    launcher, env, passwords = shipped_users(tmp_path)
    login = {"username": ADMIN[0], "password": ADMIN[1]}
    nodes = cluster_nodes(tmp_path / "nodes", 3, login=login, launcher=launcher, env=env)
    try:
        settings = Settings(stream_prefix="ferry:", redis_cluster=True)

        def bus(user: str) -> Bus:
            return Bus(settings, nodes[0].url(f"ferry-{user}", passwords[user]))

        d = digest_of("on-a-cluster")
        as_ci = bus("ci")
        as_ci.publish(CiResult(service="api", digest=d))
        gate = bus("gate-evaluator")
        command = PromotionCommand(
            kind="open", service="api", digest=d, promotion_id="p1", source_env="dev",
            target_env="staging",
        )  # fmt: skip
        assert gate.emit(command) is not None and gate.emit(command) is None
        gate.ensure_group("ci", "gate-evaluator")
        with gate.lock("decide:api:staging"):
            pass
        due = DueTimes(gate, "gate-evaluator")
        due.set("api|dev|staging", 1.0)
        claim = due.claim(2.0, 5000)
        assert claim.members == ["api|dev|staging"] and due.release("api|dev|staging", claim.token)
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_ci.redis.xadd("ferry:signals", {"kind": "approval"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            bus("pr-writer").redis.xadd("ferry:ci", {"kind": "ci"})
    finally:
        for node in nodes:
            node.stop()
