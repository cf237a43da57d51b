"""Properties of the one decision (`ferry.core.decision.decide`): plain values in, actions out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.core.decision import Decision, PromotionView, decide
from ferry.core.events import promotion_id
from ferry.core.evidence import Candidate, Evidence, Word
from ferry.core.policy import load_policy
from ferry.core.windows import open_until
from tests.unit.decisions import snapshot

POLICY = load_policy("""
environments:
  dev: {promote_from: build, auto_merge: true}
  staging: {promote_from: dev, gates: {ci: {}}, auto_merge: true}
  prod:
    promote_from: staging
    auto_merge: true
    gates:
      approval: {min_approvals: 1, approvers: [release-lead, "team:sre"], expires_after: 3h}
      soak: {min_duration: 2h, checks: [load-test]}
      windows:
        - {allow: "0 9 * * 1-4", duration: 6h, timezone: Europe/Berlin}
        - {deny: "0 0 20 12 *", duration: 14d, timezone: UTC}
approvers:
  teams: {sre: [sre-oncall-1, sre-oncall-2]}
""")
PROD = POLICY.environment("prod")
D = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
GREEN = Evidence(checks={"load-test": "success"})
ACTORS = ["release-lead", "sre-oncall-1", "sre-oncall-2", "intern", "dev-1"]
T0 = datetime(2026, 11, 1, tzinfo=UTC)

instants = st.integers(0, 90 * 24 * 3600).map(lambda s: T0 + timedelta(seconds=s))
word_times = st.integers(-6 * 3600, 0)


@st.composite
def some_words(draw: st.DrawFn, digest: str = D, env: str = "prod") -> list[Word]:
    out = []
    for actor in draw(st.lists(st.sampled_from(ACTORS), max_size=6)):
        kind = draw(st.sampled_from(["approval", "rejection"]))
        at = T0 + timedelta(seconds=draw(st.integers(0, 90 * 24 * 3600)))
        out.append(Word(kind, actor, digest, env, "why", at))  # type: ignore[arg-type]
    return out


def prod(now: datetime, **kw: object) -> Decision:
    kw.setdefault("evidence", GREEN)
    kw.setdefault("live_since", now - timedelta(hours=3))
    kw.setdefault("author", "dev-1")
    return decide(snapshot(POLICY, "prod", D, now, **kw))  # type: ignore[arg-type]


def verdict(d: Decision) -> tuple[object, ...]:
    return (d.state, tuple((g.gate, g.status) for g in d.gates), tuple(d.kinds()))


@given(some_words(), instants, st.randoms())
def test_the_verdict_does_not_depend_on_the_order_words_arrived(
    words: list[Word], now: datetime, rnd
) -> None:  # noqa: ANN001
    shuffled = list(words)
    rnd.shuffle(shuffled)
    assert verdict(prod(now, words=tuple(words))) == verdict(prod(now, words=tuple(shuffled)))


@given(some_words(), some_words(OTHER, "prod"), some_words(D, "staging"), instants)
def test_a_word_never_counts_for_another_digest_or_environment(
    mine: list[Word], other_digest: list[Word], other_env: list[Word], now: datetime
) -> None:
    alone = prod(now, words=tuple(mine))
    mixed = prod(now, words=tuple(mine + other_digest + other_env))
    assert verdict(alone) == verdict(mixed)


@given(st.integers(2026, 2030), st.integers(0, 14 * 24 * 3600 - 1), some_words())
def test_a_deny_window_blocks_at_every_instant_it_is_active(
    year: int, offset: int, words: list[Word]
) -> None:
    now = datetime(year, 12, 20, tzinfo=UTC) + timedelta(seconds=offset)
    assert open_until(PROD.gates.windows[1], now) is not None
    d = prod(now, words=tuple(words))
    assert dict((g.gate, g.status) for g in d.gates)["windows"] == "waiting"
    assert d.state != "ready" and "merge" not in d.kinds()
    assert not any(a.auto_merge for a in d.actions)


@given(instants, st.integers(0, 2 * 3600 - 1), some_words())
def test_soak_never_passes_before_min_duration(
    now: datetime, live_for: int, words: list[Word]
) -> None:
    d = prod(now, live_since=now - timedelta(seconds=live_for), words=tuple(words))
    assert dict((g.gate, g.status) for g in d.gates)["soak"] == "waiting"
    assert d.state != "ready" and "merge" not in d.kinds()


@given(instants, st.floats(0, 1e6), st.floats(0.001, 1e6), st.sampled_from(["dev", "prod"]))
def test_an_older_build_is_never_chosen_over_a_newer_one(
    now: datetime, rank: float, newer_by: float, target: str
) -> None:
    base = T0.timestamp() + rank
    newer = Candidate(OTHER, base + newer_by, promotion_id("api", OTHER, target), fence=3)
    kw = {"evidence": GREEN, "live_since": now - timedelta(hours=3)} if target == "prod" else {}
    d = decide(snapshot(POLICY, target, D, now, build_rank=base, candidate=newer, **kw))
    assert d.state == "older"
    assert d.kinds() == ["nothing"]
    # and the newer one, judged against the older candidate, is chosen (where gates allow)
    older = Candidate(D, base, promotion_id("api", D, target), fence=3)
    d2 = decide(
        snapshot(POLICY, target, OTHER, now, build_rank=base + newer_by, candidate=older, **kw)
    )
    assert d2.state != "older"


@settings(max_examples=150, deadline=None)
@given(
    instants,
    some_words(),
    st.integers(-3 * 3600, 3 * 3600),
    st.booleans(),
    st.sampled_from([None, "requested", "open"]),
)
def test_next_change_at_is_never_later_than_the_first_change(
    now: datetime, words: list[Word], live_offset: int, green: bool, state: str | None
) -> None:
    kw: dict[str, object] = {
        "words": tuple(words),
        "live_since": now - timedelta(hours=2) + timedelta(seconds=live_offset),
        "evidence": GREEN if green else Evidence(),
    }
    if state is not None:
        kw["promotion"] = PromotionView(promotion_id("api", D, "prod"), D, state, pr=7)  # type: ignore[arg-type]
    first = prod(now, **kw)
    horizon = first.next_change_at or now + timedelta(days=30)
    assert horizon > now
    # Just before the announced change, and at instants in between, nothing has changed yet.
    probes = [horizon - timedelta(microseconds=1), now + (horizon - now) / 2]
    probes += [now + (horizon - now) * k / 7 for k in range(1, 7)]
    for at in probes:
        assert verdict(prod(at, **kw)) == verdict(first), at


def test_a_gated_environment_opens_its_pull_request_early_with_the_unmet_gates() -> None:
    monday_night = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # windows closed
    d = prod(monday_night, live_since=monday_night, evidence=Evidence())
    [opened, wait] = d.actions
    assert opened.kind == "open" and opened.auto_merge is False
    assert opened.gates_state == "pending"
    assert (
        opened.gates_description == "unmet: approval (waiting), soak (waiting), windows (waiting)"
    )
    assert wait.kind == "wait" and wait.until == monday_night + timedelta(hours=2)


def test_gates_are_updated_only_when_they_change() -> None:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)  # Thursday, window open
    first = prod(now, live_since=now)
    [opened, _] = first.actions
    sent = PromotionView(promotion_id("api", D, "prod"), D, "open", 7, opened.gates_fingerprint)
    later = prod(now + timedelta(minutes=5), live_since=now, promotion=sent)
    assert later.kinds() == ["wait"]  # the soak's clock moved, its state did not
    approved = (Word("approval", "release-lead", D, "prod", "", now),)
    changed = prod(now + timedelta(minutes=5), live_since=now, promotion=sent, words=approved)
    assert changed.kinds() == ["update_gates", "wait"]


def test_a_rejection_marks_the_open_pull_request_as_failed() -> None:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    opened = PromotionView(promotion_id("api", D, "prod"), D, "open", 7, "old")
    rejected = (Word("rejection", "sre-oncall-2", D, "prod", "p99 regressed", now),)
    d = prod(now, promotion=opened, words=rejected)
    assert d.state == "blocked"
    assert d.actions[0].kind == "update_gates" and d.actions[0].gates_state == "failure"


def test_when_every_gate_passes_an_early_pull_request_is_merged_or_left_to_a_person() -> None:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    opened = PromotionView(promotion_id("api", D, "prod"), D, "open", 7, "old")
    ok = (Word("approval", "release-lead", D, "prod", "", now),)
    assert prod(now, promotion=opened, words=ok).kinds() == ["update_gates", "merge"]
    manual = POLICY.model_copy()
    env = PROD.model_copy(update={"auto_merge": False})
    manual.environments["prod"] = env
    d = decide(
        snapshot(
            manual,
            "prod",
            D,
            now,
            evidence=GREEN,
            live_since=now - timedelta(hours=3),
            promotion=opened,
            words=ok,
        )
    )
    assert d.state == "waiting for a person to merge"
    assert d.kinds() == ["update_gates"] and d.actions[0].gates_state == "success"


def test_an_expired_approval_no_longer_counts() -> None:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    old = (Word("approval", "release-lead", D, "prod", "", now - timedelta(hours=3)),)
    d = prod(now, words=old)
    approval = d.gates[0]
    assert approval.status == "waiting" and "release-lead's approval expired" in approval.reason
    fresh = (Word("approval", "release-lead", D, "prod", "", now - timedelta(hours=1)),)
    d = prod(now, words=fresh)
    assert d.gates[0].status == "passed"
    assert d.next_change_at == now + timedelta(hours=2)  # when that approval expires


def test_each_approvers_latest_word_counts_and_a_standing_rejection_blocks() -> None:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    t = [now - timedelta(minutes=m) for m in (30, 20, 10)]
    withdrawn = (
        Word("rejection", "release-lead", D, "prod", "wait", t[0]),
        Word("approval", "release-lead", D, "prod", "", t[1]),
    )
    assert prod(now, words=withdrawn).gates[0].status == "passed"
    blocked = (
        Word("approval", "release-lead", D, "prod", "", t[0]),
        Word("approval", "sre-oncall-1", D, "prod", "", t[1]),
        Word("rejection", "sre-oncall-2", D, "prod", "no", t[2]),
    )
    assert prod(now, words=blocked).gates[0].status == "failed"


def test_choosing_a_newer_digest_closes_the_older_candidates_open_pull_request() -> None:
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    old_pid = promotion_id("api", OTHER, "prod")
    older = Candidate(OTHER, now.timestamp() - 600, old_pid, fence=1)
    d = prod(
        now,
        build_rank=now.timestamp(),
        candidate=older,
        candidate_promotion=PromotionView(old_pid, OTHER, "open", 4),
    )
    close = next(a for a in d.actions if a.kind == "close")
    assert close.promotion_id == old_pid and close.successor == D and close.pr == 4


@given(now=instants, state=st.sampled_from(["requested", "open", "merged", "closed"]))
def test_a_closed_or_reverted_candidate_no_longer_outranks_an_older_build(
    now: datetime, state: str
) -> None:
    pid = promotion_id("api", OTHER, "staging")
    newer = Candidate(OTHER, now.timestamp() + 60, pid, fence=2)
    for reverted in (False, True):
        if reverted and state != "merged":
            continue
        view = PromotionView(pid, OTHER, state, 5, reverted=reverted)  # type: ignore[arg-type]
        d = decide(
            snapshot(
                POLICY,
                "staging",
                D,
                now,
                build_rank=now.timestamp(),
                candidate=newer,
                candidate_promotion=view,
                evidence=Evidence(checks={"*": "success"}),
            )
        )
        set_aside = state == "closed" or reverted
        assert (d.state == "older") is not set_aside
        if d.state == "older":
            assert OTHER in d.sentence and "#5" in d.sentence  # names the candidate that blocks


def test_a_merged_promotion_main_no_longer_pins_waits_for_a_person() -> None:
    pid = promotion_id("api", D, "prod")
    gone = PromotionView(pid, D, "merged", 7, merge_commit="c0ffee", reverted=True)
    d = prod(T0 + timedelta(days=3, hours=10), promotion=gone, pinned_target=OTHER)
    assert d.state == "reverted" and d.kinds() == ["nothing"]
    assert f"ferry promote api prod {D} --as USER" in d.sentence
    shown = PromotionView(pid, D, "merged", 7, merge_commit="c0ffee")
    assert prod(T0, promotion=shown, pinned_target=OTHER).state == "merged"
