"""The notifier against a local HTTP receiver: one message per event and receiver, retried after
the receiver fails, none duplicated after a restart and a replay, Slack's shape and a signed
JSON body."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Cluster, digest_of, run_cli, wait_until

POLICY = """\
environments:
  dev: {promote_from: build, auto_merge: true}
  staging: {promote_from: dev, auto_merge: true}
  prod:
    promote_from: staging
    auto_merge: true
    gates:
      approval: {min_approvals: 1, approvers: [release-lead]}
notifications:
  webhooks:
    - {name: audit-sink, kind: json, url_env: FERRY_TEST_HOOK_URL,
       secret_env: FERRY_TEST_HOOK_SECRET}
    - {name: team-chat, kind: slack, url_env: FERRY_TEST_SLACK_URL, events: [rejected],
       environments: [prod]}
"""
SECRET = "hook-secret-for-the-test"


class Receiver:
    """An HTTP server that records what it is sent, and answers 503 to the first FAIL posts."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        self.refused = 0
        self.fail = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                data = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.fail > 0:
                    receiver.fail -= 1
                    receiver.refused += 1
                    self.send_response(503)
                else:
                    receiver.got.append((self.path, dict(self.headers), data))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def notices(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(body) for p, _, body in list(self.got) if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def kinds(notices: list[dict[str, Any]]) -> list[str]:
    return sorted(n["kind"] for n in notices)


def test_each_notice_once_retried_after_failures_and_not_again_after_a_restart(
    env: Cluster,
    receiver: Receiver,
    capsys,  # noqa: ANN001
) -> None:
    env.init_repo(["api"])
    env.commit_by_hand("notify", lambda clone: (clone / "ferry.yaml").write_text(POLICY))
    hooks = {
        "FERRY_TEST_HOOK_URL": receiver.url("/json"),
        "FERRY_TEST_HOOK_SECRET": SECRET,
        "FERRY_TEST_SLACK_URL": receiver.url("/slack"),
    }
    env.start("gate-evaluator")
    env.start("pr-writer")
    notifier = env.start("notifier", **hooks)
    receiver.fail = 2  # the first two posts fail: the notifier retries with backoff

    d = digest_of("notified")
    env.build("api", d)
    env.wait_pinned("api", "staging", d)
    wait_until(lambda: receiver.notices("/json"), 20, "the needs-approval notice")
    assert receiver.refused == 2
    run_cli(capsys, "reject", "api", d, "--env", "prod", "--as", "release-lead", "--reason", "no")
    env.bus.redis.xadd(env.bus.stream("ci"), {"kind": "ci", "service": "api", "digest": "x"})
    wait_until(lambda: len(receiver.notices("/json")) == 3, 20, "three notices")
    wait_until(lambda: receiver.notices("/slack"), 10, "the rejection in the chat")

    json_notices = receiver.notices("/json")
    assert kinds(json_notices) == ["dead_letter", "needs_approval", "rejected"]
    approval = next(n for n in json_notices if n["kind"] == "needs_approval")
    assert approval["env"] == "prod" and approval["digest"] == d and approval["pr"]
    assert f"ferry approve api {d} --env prod" in approval["text"]
    for _, headers, content in receiver.got:
        if headers.get("X-Ferry-Signature"):
            expected = hmac.new(SECRET.encode(), content, hashlib.sha256).hexdigest()
            assert headers["X-Ferry-Signature"] == f"sha256={expected}"
    assert sum(1 for p, h, _ in receiver.got if p == "/json" and "X-Ferry-Signature" in h) == 3
    [chat] = receiver.notices("/slack")
    assert chat == {"text": f"Ferry: api {d[:19]} rejected for prod by release-lead: no"}

    # A restart and a replay of every signal and change: nothing is sent twice. The kill comes
    # once every notice is recorded as sent: one killed between its post and that record keeps
    # the notice marked "sending" for SENDING_S, and the replay would wait behind it.
    wait_until(
        lambda: all(env.caught_up(s, "notifier") for s in ("signals", "changes", "dlq")),
        20,
        "the notifier to finish what it took",
    )
    env.kill(notifier)
    env.start("notifier", **hooks)
    assert run_cli(capsys, "replay", "signals")[0] == 0
    assert run_cli(capsys, "replay", "changes")[0] == 0
    late = digest_of("later")
    run_cli(capsys, "reject", "api", late, "--env", "prod", "--as", "release-lead",
            "--reason", "sentinel", "--no-check")  # fmt: skip
    wait_until(lambda: len(receiver.notices("/slack")) == 2, 20, "the sentinel rejection")
    assert kinds(receiver.notices("/json")) == [
        "dead_letter",
        "needs_approval",
        "rejected",
        "rejected",
    ]
    log = Path(env.logs).glob("notifier-*.log")
    assert not any("hook-secret" in p.read_text() or str(receiver.server.server_address[1])
                   in p.read_text() for p in log)  # fmt: skip
