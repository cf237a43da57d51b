"""Which events become which notices, who receives them, and how a body is signed."""

from __future__ import annotations

import hashlib
import hmac

from ferry.core.events import Change, DeadLetter, Signal
from ferry.core.notices import body, notice_for, receivers, signature
from ferry.core.policy import load_policy

D = "sha256:" + "ab" * 32
POLICY = load_policy("""
environments:
  dev: {promote_from: build}
  prod: {promote_from: dev, gates: {approval: {approvers: [lead]}}}
notifications:
  webhooks:
    - {name: all, url_env: ALL_URL}
    - {name: chat, kind: slack, url_env: CHAT_URL, events: [rejected], environments: [prod]}
""")


def change(kind: str, env: str = "prod", **kw: object) -> Change:
    return Change.about(kind, promotion_id="p-1", service="api", digest=D, env=env, pr=4, **kw)


def test_each_event_that_needs_people_becomes_its_notice() -> None:
    assert notice_for(change("pr_opened"), POLICY).kind == "needs_approval"  # type: ignore[union-attr]
    assert notice_for(change("pr_opened", env="dev"), POLICY) is None  # no approval gate
    assert notice_for(change("pr_merged"), POLICY) is None
    rolled = notice_for(change("pr_merged", rollback_of="sha256:" + "cd" * 32), POLICY)
    assert rolled is not None and rolled.kind == "rolled_back"
    failed = notice_for(change("promotion_failed", reason="conflict"), POLICY)
    assert failed is not None and failed.kind == "failed" and "conflict" in failed.text
    no = Signal(kind="rejection", service="api", digest=D, env="prod", actor="lead", reason="x")
    assert notice_for(no, POLICY).kind == "rejected"  # type: ignore[union-attr]
    letter = {"stream": "ferry:ci", "entry_id": "1-0", "error": "bad", "deliveries": 1}
    assert notice_for(DeadLetter(worker="gate-evaluator", **letter), POLICY) is not None  # type: ignore[arg-type]
    assert notice_for(DeadLetter(worker="notifier", **letter), POLICY) is None  # type: ignore[arg-type]


def test_receivers_filter_by_kind_and_environment_and_json_bodies_are_signed() -> None:
    no = Signal(kind="rejection", service="api", digest=D, env="prod", actor="lead")
    notice = notice_for(no, POLICY)
    assert notice is not None
    assert [h.name for h in receivers(POLICY, notice)] == ["all", "chat"]
    dev = notice_for(no.model_copy(update={"env": "dev"}), POLICY)
    assert dev is not None and [h.name for h in receivers(POLICY, dev)] == ["all"]
    chat = receivers(POLICY, notice)[1]
    assert (
        body(chat, notice)
        == b'{"text":"Ferry: api ' + D[:19].encode() + b' rejected for prod by lead"}'
    )
    content = body(receivers(POLICY, notice)[0], notice)
    expected = hmac.new(b"k", content, hashlib.sha256).hexdigest()
    assert signature("k", content) == f"sha256={expected}"
