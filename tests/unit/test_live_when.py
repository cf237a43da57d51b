"""`live_when`: with `synced` or `healthy` on an environment, a digest counts as live there (its
soak starts, the next environment may follow) only once Argo CD reports the application synced to
it (and healthy); `decide` says what it waits for. Reports folded by `observe`: plain values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.core.decision import Decision, decide
from ferry.core.deployments import Deployment, observe
from ferry.core.policy import PolicyError, load_policy
from tests.unit.decisions import snapshot

POLICY = load_policy("""
environments:
  dev: {promote_from: build, auto_merge: true}
  staging: {promote_from: dev, auto_merge: true, live_when: healthy}
  qa: {promote_from: dev, auto_merge: true, live_when: synced}
  prod: {promote_from: staging, auto_merge: true, gates: {soak: {min_duration: 2h}}}
  perf: {promote_from: qa, auto_merge: true}
""")
D = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def report(
    previous: Deployment | None,
    sync: str = "Synced",
    health: str = "Healthy",
    at: datetime = T0,
    digest: str = D,
) -> Deployment | None:
    return observe(previous, digest=digest, app="api-staging", sync=sync, health=health, at=at)


def into(target: str, deployed: Deployment | None, now: datetime, **kw: object) -> Decision:
    source = POLICY.environment(target).promote_from
    kw.setdefault("live_since", T0 - timedelta(hours=5))  # merged long ago
    return decide(
        snapshot(
            POLICY,
            target,
            D,
            now,
            source_live_when=POLICY.environment(source).live_when,
            deployed=deployed,
            **kw,  # type: ignore[arg-type]
        )
    )


def test_live_when_defaults_to_merged_and_a_wrong_value_is_one_line_with_its_place() -> None:
    assert POLICY.environment("dev").live_when == "merged"
    assert POLICY.environment("staging").live_when == "healthy"
    text = "environments:\n  dev: {promote_from: build}\n  staging:\n    promote_from: dev\n"
    with pytest.raises(PolicyError) as info:
        load_policy(text + "    live_when: running\n")
    message = str(info.value)
    assert message.startswith("ferry.yaml:5: environments.staging.live_when:")
    assert "'merged', 'synced' or 'healthy'" in message and "\n" not in message


def test_without_a_report_from_argo_cd_the_next_environment_waits_and_says_for_what() -> None:
    d = into("prod", None, T0)
    assert d.state == "waiting" and d.kinds() == ["nothing"]
    assert d.sentence.startswith(
        f"waiting for Argo CD to report api synced+healthy in staging at {D}"
    )
    assert "no report from Argo CD yet" in d.sentence


def test_a_degraded_or_out_of_sync_report_does_not_count() -> None:
    for sync, health in (
        ("Synced", "Degraded"),
        ("Synced", "Progressing"),
        ("OutOfSync", "Healthy"),
    ):
        d = into("prod", report(None, sync, health), T0)
        assert d.state == "waiting" and d.kinds() == ["nothing"], (sync, health)
        assert f"last report: api-staging {sync}, {health} at {D}" in d.sentence


def test_a_healthy_report_of_another_digest_does_not_count() -> None:
    d = into("prod", report(None, digest=OTHER), T0)
    assert d.state == "waiting" and "api-staging Synced, Healthy at " + OTHER in d.sentence


def test_the_soak_counts_from_the_healthy_report_not_from_the_merge() -> None:
    healthy = report(None, at=T0)
    # the soak waits (the pull request opens early, not to be merged yet)
    waiting = into("prod", healthy, T0 + timedelta(hours=1))
    assert waiting.state == "waiting" and waiting.kinds() == ["open", "wait"]
    assert not waiting.actions[0].auto_merge
    assert waiting.next_change_at == T0 + timedelta(hours=2)
    ready = into("prod", healthy, T0 + timedelta(hours=2))
    assert ready.state == "ready" and ready.kinds() == ["open"] and ready.actions[0].auto_merge
    # merged after the report (a report seen first): the later of the two counts
    late = into("prod", healthy, T0 + timedelta(hours=2), live_since=T0 + timedelta(hours=1))
    assert late.state == "waiting" and late.next_change_at == T0 + timedelta(hours=3)


def test_live_when_synced_takes_a_synced_report_whatever_its_health() -> None:
    d = into("perf", report(None, "Synced", "Progressing"), T0)
    assert d.state == "ready" and d.kinds() == ["open"]
    assert into("perf", report(None, "OutOfSync", "Healthy"), T0).state == "waiting"


def test_a_degraded_report_restarts_the_run_and_an_older_report_is_ignored() -> None:
    first = report(None, at=T0)
    again = report(first, at=T0 + timedelta(minutes=5))
    assert again is not None and again.healthy_since == T0  # an unbroken run
    degraded = report(again, "Synced", "Degraded", T0 + timedelta(minutes=10))
    assert degraded is not None and degraded.healthy_since is None
    assert degraded.synced_since == T0
    assert report(degraded, at=T0 + timedelta(minutes=1)) is None  # older than what stands
    back = report(degraded, at=T0 + timedelta(minutes=20))
    assert back is not None and back.healthy_since == T0 + timedelta(minutes=20)
    assert into("prod", degraded, T0 + timedelta(hours=3)).state == "waiting"


reports = st.lists(
    st.tuples(
        st.sampled_from(["Synced", "OutOfSync", "Unknown"]),
        st.sampled_from(["Healthy", "Progressing", "Degraded", "Missing"]),
        st.sampled_from([D, OTHER]),
        st.integers(0, 24 * 3600),
    ),
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(reports)
def test_the_next_environment_follows_only_while_argo_cd_reports_the_digest_synced_and_healthy(
    seen: list[tuple[str, str, str, int]],
) -> None:
    state: Deployment | None = None
    latest: tuple[str, str, str, int] | None = None
    for sync, health, digest, s in seen:
        after = report(state, sync, health, T0 + timedelta(seconds=s), digest)
        if after is not None:
            state, latest = after, (sync, health, digest, s)
    d = into("prod", state, T0 + timedelta(days=2))
    moves = any(a.kind in ("open", "merge") for a in d.actions)
    assert moves == (latest is not None and latest[:3] == ("Synced", "Healthy", D))
