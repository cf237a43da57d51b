"""`ferry migrate-keys`: keys written under the names an earlier Ferry used (before the
cluster-ready layout) are found again under the new ones, and a second run moves nothing."""

from __future__ import annotations

import json
from typing import Any

from ferry.adapters.preview_store import PreviewStore, Record
from ferry.core.events import Change, PromotionCommand
from tests.helpers import Cluster, digest_of, run_cli


def test_old_markers_previews_and_due_times_are_found_after_the_migration(
    env: Cluster, capsys: Any
) -> None:
    r, key = env.bus.redis, env.settings.key
    d = digest_of("old")
    command = PromotionCommand(
        kind="open", service="api", digest=d, promotion_id="p1", source_env="dev", target_env="qa"
    )
    # What the previous layout held: a marker naming no stream, a preview, its due time.
    r.set(key("once", command.once_key or ""), command.event_id, ex=3600)
    record = Record(repo="shop/web", pr=7, live_team="web", due=1234.5)
    r.set(key("previews", "record", "shop/web#7"), record.to_json())
    r.sadd(key("previews", "all"), "shop/web#7")
    r.sadd(key("previews", "team", "web"), "shop/web#7")
    r.zadd(key("due", "preview-reaper"), {"shop/web#7": 1234.5})

    code, out, err = run_cli(capsys, "migrate-keys", "--dry-run")
    assert code == 0, err
    assert out.strip() == (
        "would move 1 publish-once markers, 2 preview records and team sets, 1 preview due times"
    )
    assert r.exists(key("previews", "record", "shop/web#7"))  # a dry run moves nothing

    moved_json = json.loads(run_cli(capsys, "migrate-keys", "--json")[1])
    assert moved_json == {"once": 1, "previews": 2, "due": 1}
    assert env.bus.emit(command) is None  # published before the upgrade: not again
    change = Change.about("pr_opened", promotion_id="p1", service="api", digest=d, env="qa")
    assert env.bus.emit(change) is not None  # a marker of its own, never set: published
    store = PreviewStore(env.bus)
    moved = store.load("shop/web#7")
    assert moved is not None and moved.due == 1234.5
    assert store.team_members("web") == ["shop/web#7"]
    assert store.due.when("shop/web#7") == 1234.5
    assert not r.exists(key("previews", "record", "shop/web#7"), key("due", "preview-reaper"))
    assert 0 < r.ttl(env.settings.near(env.bus.stream("promotions"), "once", command.once_key))

    assert run_cli(capsys, "migrate-keys")[1].strip() == (
        "moved 0 publish-once markers, 0 preview records and team sets, 0 preview due times"
    )
