"""preview-reaper on a real Redis and a real GitOps repo (for its policy): warnings, reaping,
quota refusals, replicas and restarts."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ferry.adapters.preview_store import PreviewStore
from ferry.core.events import PreviewEvent
from ferry.core.policy import Previews
from ferry.core.previews import preview_status
from tests.helpers import Cluster, wait_until


def with_previews(cluster: Cluster, block: str) -> Previews:
    """Replace the previews block of ferry.yaml on main with BLOCK (one flow mapping)."""

    def change(clone: Path) -> None:
        text = (clone / "ferry.yaml").read_text()
        head, _, rest = text.partition("\npreviews:\n")
        tail = rest[rest.index("\n\n") :]
        (clone / "ferry.yaml").write_text(f"{head}\npreviews: {block}\n{tail}")

    cluster.commit_by_hand(f"previews: {block}", change)
    return cluster.repo.policy().previews


def opened(repo: str, pr: int, team: str = "web", **kw: Any) -> PreviewEvent:
    kw.setdefault("labels", ["preview"])
    return PreviewEvent(kind="opened", repo=repo, pr=pr, team=team, **kw)


def comments(store: PreviewStore, key: str) -> list[str]:
    return [e["body"] for e in store.action_log(key) if e["action"] == "comment"]


def removals(store: PreviewStore, key: str) -> int:
    return sum(1 for e in store.action_log(key) if e["action"] == "remove_label")


def state(store: PreviewStore, policy: Previews, key: str) -> str:
    record = store.load(key)
    return preview_status(policy, record.history(), datetime.now(UTC)).state if record else "-"


def test_quota_refusals_and_warnings_are_commented_once_each(cluster: Cluster) -> None:
    cluster.init_repo()
    policy = with_previews(
        cluster,
        "{ttl: 3s, ttl_from: created, max_ttl: 1h, quota_per_team: 2, warn_before: 2s}",
    )
    store = PreviewStore(cluster.bus)
    cluster.start("preview-reaper")
    cluster.start("preview-reaper")
    for pr in (1, 2, 3):
        event = opened("shop/web", pr)
        cluster.bus.publish(event)
        cluster.bus.publish(event)  # a duplicate delivery: one preview, one decision
    cluster.bus.publish(opened("shop/api", 9, team="api"))  # another team has its own quota
    keys = ["shop/web#1", "shop/web#2", "shop/web#3", "shop/api#9"]
    wait_until(
        lambda: all(
            state(store, policy, k) == "reaped" or state(store, policy, k) == "refused"
            for k in keys
        ),
        30,
        "all decided",
    )
    states = {k: state(store, policy, k) for k in keys}
    assert sorted(states.values()) == ["reaped", "reaped", "reaped", "refused"], states
    [refused] = [k for k, s in states.items() if s == "refused"]
    assert refused.startswith("shop/web#")
    time.sleep(1.5)  # let a second look, a redelivery or the other replica act twice if it would
    for key in keys:
        texts = comments(store, key)
        if key == refused:
            assert len(texts) == 1 and "quota is 2" in texts[0], texts
        else:
            assert len(texts) == 2, texts  # one warning, one reaping
            assert texts[0].startswith("This preview will be reaped at")
            assert texts[1].startswith("Ferry reaped this preview: expired at")
        assert removals(store, key) == 1


def lateness(store: PreviewStore, policy: Previews, keys: list[str]) -> list[float]:
    """Seconds between each preview's expiry and its reaping, checking it was reaped once."""
    late = []
    for key in keys:
        record = store.load(key)
        assert record is not None, key
        reaped = [m for m in record.marks if m.kind == "reaped"]
        assert len(reaped) == 1, (key, record.marks)
        status = preview_status(policy, record.history(), reaped[0].at)
        assert status.expires_at is not None
        late.append((reaped[0].at - status.expires_at).total_seconds())
        assert removals(store, key) == 1, key
    return late


def test_a_thousand_previews_reaped_on_time_by_two_replicas_one_restarted(
    cluster: Cluster,
) -> None:
    n = 1000
    cluster.init_repo()
    policy = with_previews(
        cluster,
        "{ttl: 10s, ttl_from: last_activity, max_ttl: 1h, quota_per_team: null, warn_before: 0s}",
    )
    store = PreviewStore(cluster.bus)
    first = cluster.start("preview-reaper")
    cluster.start("preview-reaper")
    start = datetime.now(UTC)
    keys = []
    # Mixed lifetimes from 10 to 26 s: the policy's TTL, pushed by activity, or an absolute end;
    # all published within a second, so that every event is recorded before the first expiry.
    for i in range(n):
        repo, pr = f"shop/app{i % 10}", i + 1
        keys.append(f"{repo}#{pr}")
        at = start + timedelta(milliseconds=i)
        until = at + timedelta(seconds=10 + i % 17) if i % 3 == 0 else None
        cluster.bus.publish(opened(repo, pr, occurred_at=at, until=until))
        if i % 3 == 1:
            later = at + timedelta(seconds=1 + i % 5)
            cluster.bus.publish(PreviewEvent(kind="updated", repo=repo, pr=pr, occurred_at=later))
    wait_until(lambda: state(store, policy, keys[0]) == "reaped", 60, "the first reaping")
    time.sleep(3)
    cluster.kill(first)  # SIGKILL in the middle: its claims and pending entries must not be lost
    time.sleep(1)
    cluster.start("preview-reaper")
    wait_until(lambda: all(state(store, policy, k) == "reaped" for k in keys), 120, "all reaped")
    late = sorted(lateness(store, policy, keys))
    median, p99, worst = late[n // 2], late[int(n * 0.99)], late[-1]
    print(f"\nlateness of {n} reapings: median {median:.3f}s p99 {p99:.3f}s max {worst:.3f}s")
    assert late[0] >= 0, "reaped before its expiry"
    # Robust on a loaded machine, and still far from a minute-scale poll.
    assert worst < 10, late[-10:]


def fake_forge_with_prs(root: Path, flavour: str, seed: Path, prs: range) -> Any:
    """A fake FLAVOUR forge whose repository has an open PR labelled preview for each of PRS."""
    from ferry.adapters.git import git
    from tests.forgefake.server import FakeForge

    fake = FakeForge(root / f"forge-{flavour}", flavour).start()
    fake.seed(seed)
    for pr in prs:
        git("push", "-q", str(fake.repo), f"main:refs/heads/feature-{pr}", cwd=seed)
        with fake.lock:
            fake.open_pr(
                head=f"feature-{pr}",
                base="main",
                title=f"feature {pr}",
                body="",
                labels=["preview", "needs-review"],
            )
    return fake


def forge_env(fake: Any) -> dict[str, str]:
    # Forge calls must end well within a claim's lease (a third of FERRY_LOCK_TTL_MS each).
    return {
        "FERRY_FORGE": fake.flavour,
        "FERRY_FORGE_URL": fake.api_url,
        "FERRY_FORGE_TOKEN": fake.token,
        "FERRY_CLAIM_IDLE_MS": "10000",
        "FERRY_LOCK_TTL_MS": "6000",
    }


def comments_on(fake: Any, pr: int) -> list[str]:
    with fake.lock:
        return [c["body"] for c in fake.pulls[pr].comments]


def labels_on(fake: Any, pr: int) -> set[str]:
    with fake.lock:
        return set(fake.pulls[pr].labels)


def test_a_failing_forge_reaps_nothing_and_the_expired_are_reaped_once_it_answers(
    cluster: Cluster,
) -> None:
    cluster.init_repo()
    policy = with_previews(cluster, "{ttl: 2s, max_ttl: 1h, quota_per_team: null, warn_before: 0s}")
    store = PreviewStore(cluster.bus)
    fake = fake_forge_with_prs(cluster.root, "github", cluster.repo_path, range(1, 11))
    try:
        outage = fake.fail(503, times=10**9)
        cluster.start("preview-reaper", **forge_env(fake))
        repo, now = fake.full_name, datetime.now(UTC)
        short = [f"{repo}#{pr}" for pr in range(1, 6)]
        long = [f"{repo}#{pr}" for pr in range(6, 11)]
        for pr in range(1, 11):
            until = now + timedelta(seconds=2 if pr <= 5 else 600)
            cluster.bus.publish(opened(repo, pr, labels=["preview", "needs-review"], until=until))
        # The expired ones are tried and fail, again and again; the others are never touched.
        wait_until(lambda: len(fake.requests) >= 10, 30, "failed calls")
        time.sleep(2)
        touched = {int(r["path"].split("/")[-1]) for r in fake.requests if "/pulls/" in r["path"]}
        assert touched and touched <= {1, 2, 3, 4, 5}, fake.requests[:5]
        assert all(labels_on(fake, pr) == {"preview", "needs-review"} for pr in range(1, 11))
        assert all(state(store, policy, k) == "active" for k in long)
        assert all(store.load(k).outbox for k in short)  # type: ignore[union-attr]
        with fake.lock:
            outage.times = 0
        wait_until(
            lambda: all(comments_on(fake, pr) for pr in range(1, 6)),
            90,
            "the expired previews reaped once the forge answers",
        )
        wait_until(lambda: all(not store.load(k).outbox for k in short), 30, "actions done")  # type: ignore[union-attr]
        for pr in range(1, 6):
            assert labels_on(fake, pr) == {"needs-review"}
            [comment] = comments_on(fake, pr)
            assert comment.startswith("Ferry reaped this preview: expired at")
        for pr in range(6, 11):
            assert labels_on(fake, pr) == {"preview", "needs-review"}
            assert not comments_on(fake, pr)
        assert all(state(store, policy, k) == "active" for k in long)
    finally:
        fake.stop()
    for proc in cluster.procs:
        assert fake.token not in cluster.log_of(proc)


@pytest.mark.parametrize("flavour", ["gitlab", "gitea"])
def test_the_reaper_warns_and_reaps_on_gitlab_and_gitea(cluster: Cluster, flavour: str) -> None:
    cluster.init_repo()
    with_previews(cluster, "{ttl: 3s, max_ttl: 1h, quota_per_team: null, warn_before: 2s}")
    fake = fake_forge_with_prs(cluster.root, flavour, cluster.repo_path, range(1, 2))
    try:
        cluster.start("preview-reaper", **forge_env(fake))
        cluster.bus.publish(opened(fake.full_name, 1, labels=["preview", "needs-review"]))
        wait_until(lambda: len(comments_on(fake, 1)) == 2, 30, "a warning, then the reaping")
        assert labels_on(fake, 1) == {"needs-review"}
        warning, reaping = comments_on(fake, 1)
        assert warning.startswith("This preview will be reaped at")
        assert reaping.startswith("Ferry reaped this preview")
    finally:
        fake.stop()


def test_previews_published_before_any_reaper_ran_are_tracked(cluster: Cluster) -> None:
    cluster.init_repo()
    policy = cluster.repo.policy().previews
    # A plain XADD, as a producer in any language would send it.
    cluster.bus.redis.xadd(
        cluster.bus.stream("previews"),
        {"kind": "opened", "repo": "shop/web", "pr": "7", "team": "web", "labels": '["preview"]'},
    )
    store = PreviewStore(cluster.bus)
    cluster.start("preview-reaper")
    wait_until(lambda: state(store, policy, "shop/web#7") == "active", 20, "the backlog read")


def test_dry_run_reports_what_it_would_do_and_acts_on_no_forge(cluster: Cluster) -> None:
    cluster.init_repo()
    policy = with_previews(
        cluster, "{ttl: 2s, max_ttl: 1h, quota_per_team: 1, warn_before: 0s, dry_run: true}"
    )
    store = PreviewStore(cluster.bus)
    fake = fake_forge_with_prs(cluster.root, "github", cluster.repo_path, range(1, 3))
    try:
        cluster.start("preview-reaper", **forge_env(fake))
        for pr in (1, 2):
            cluster.bus.publish(opened(fake.full_name, pr, labels=["preview", "needs-review"]))
        keys = [f"{fake.full_name}#1", f"{fake.full_name}#2"]
        wait_until(
            lambda: sorted(state(store, policy, k) for k in keys) == ["reaped", "refused"],
            30,
            "one refused, one reaped (dry run)",
        )
        wait_until(lambda: all(len(store.action_log(k)) == 2 for k in keys), 20, "reported")
        for key in keys:
            assert all(entry["dry_run"] for entry in store.action_log(key))
            assert all(m.dry_run for m in store.load(key).marks if m.kind != "admitted")  # type: ignore[union-attr]
        assert not [r for r in fake.requests if r["method"] != "GET"]
        assert all(labels_on(fake, pr) == {"preview", "needs-review"} for pr in (1, 2))
        outcomes = {
            e["outcome"] for e in cluster.entries("audit") if e["action"] in ("reap", "admit")
        }
        assert {"reaped (dry run)", "refused (dry run)"} <= outcomes, outcomes
    finally:
        fake.stop()
