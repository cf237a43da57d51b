"""The expiry rule and the quota of preview environments (ferry.core.previews): plain values in,
a state, a reason and what is due out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.core.events import PreviewEvent
from ferry.core.policy import PolicyError, Previews, load_policy
from ferry.core.previews import Mark, admit, ordered, preview_status

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
POLICY = Previews(ttl="2h", max_ttl="6h", warn_before="30m", quota_per_team=2)


def ev(kind: str, at: datetime, labels: tuple[str, ...] = (), **kw: object) -> PreviewEvent:
    return PreviewEvent(
        kind=kind, repo="shop/web", pr=7, occurred_at=at, labels=list(labels), team="web", **kw
    )


def admitted(at: datetime = T0, period: datetime = T0) -> Mark:
    return Mark(kind="admitted", at=at, period=period)


def opened(at: datetime = T0) -> list[PreviewEvent | Mark]:
    return [ev("opened", at, ("preview",)), admitted(at, at)]


# --------------------------------------------------------------------------- examples


def test_a_labelled_pr_is_active_until_its_ttl_then_due_for_reaping() -> None:
    history = opened()
    status = preview_status(POLICY, history, T0 + HOUR)
    assert (status.state, status.action) == ("active", None)
    assert status.expires_at == T0 + 2 * HOUR
    assert status.due == T0 + 90 * timedelta(minutes=1)  # the warning comes first
    reap = preview_status(POLICY, history, T0 + 2 * HOUR)
    assert reap.action == "reap" and reap.reason == f"expired at {(T0 + 2 * HOUR).isoformat()}"


def test_warning_is_due_warn_before_the_end_and_once_per_end() -> None:
    history = opened()
    at = T0 + 90 * timedelta(minutes=1)
    assert preview_status(POLICY, history, at - timedelta(seconds=1)).action is None
    assert preview_status(POLICY, history, at).action == "warn"
    warned = [*history, Mark(kind="warned", at=at, period=T0, for_end=T0 + 2 * HOUR)]
    status = preview_status(POLICY, warned, at + timedelta(minutes=1))
    assert (status.state, status.action, status.due) == ("warned", None, T0 + 2 * HOUR)
    # An extension moves the end: the next warning is about the new end.
    extended = [*warned, ev("extend", at + timedelta(minutes=5))]
    status = preview_status(POLICY, extended, at + timedelta(minutes=6))
    assert status.state == "active" and status.expires_at == at + timedelta(minutes=5) + 2 * HOUR


def test_last_activity_restarts_the_ttl_but_created_does_not() -> None:
    history = [*opened(), ev("updated", T0 + HOUR)]
    assert preview_status(POLICY, history, T0).expires_at == T0 + 3 * HOUR
    created = POLICY.model_copy(update={"ttl_from": "created"})
    assert preview_status(created, history, T0).expires_at == T0 + 2 * HOUR


def test_absolute_until_replaces_the_ttl_within_max_ttl() -> None:
    history = [ev("opened", T0, ("preview",), until=T0 + 30 * timedelta(minutes=1)), admitted()]
    assert preview_status(POLICY, history, T0).expires_at == T0 + 30 * timedelta(minutes=1)
    far = [ev("opened", T0, ("preview",), until=T0 + 30 * HOUR), admitted()]
    assert preview_status(POLICY, far, T0).expires_at == T0 + 6 * HOUR


def test_required_and_excluded_labels_decide_what_is_a_preview() -> None:
    policy = POLICY.model_copy(update={"required_labels": ["deploy"], "excluded_labels": ["wip"]})
    only_label = [ev("opened", T0, ("preview",))]
    assert preview_status(policy, only_label, T0).state == "unknown"
    both = [ev("opened", T0, ("preview", "deploy"))]
    assert preview_status(policy, both, T0).state == "pending"
    wip = [*both, admitted(), ev("labeled", T0 + HOUR, ("wip",))]
    assert preview_status(policy, wip, T0 + HOUR).state == "unlabeled"


def test_closing_or_unlabelling_ends_the_preview_and_relabelling_starts_a_new_one() -> None:
    closed = [*opened(), ev("closed", T0 + HOUR)]
    assert preview_status(POLICY, closed, T0 + HOUR).state == "closed"
    reaped = [*opened(), Mark(kind="reaped", at=T0 + 2 * HOUR, period=T0, reason="expired")]
    assert preview_status(POLICY, reaped, T0 + 2 * HOUR).state == "reaped"
    again = T0 + 3 * HOUR
    relabelled = [*reaped, ev("labeled", again, ("preview",))]
    status = preview_status(POLICY, relabelled, again)
    assert (status.state, status.period) == ("pending", again)


def test_a_dry_run_reap_is_reported_once_and_the_label_stays() -> None:
    history = [*opened(), Mark(kind="reaped", at=T0 + 2 * HOUR, period=T0, dry_run=True)]
    status = preview_status(POLICY, history, T0 + 5 * HOUR)
    assert (status.state, status.action) == ("reaped", None)


def test_a_reap_request_ends_the_preview_at_its_time_and_names_who_asked() -> None:
    asked = T0 + 10 * timedelta(minutes=1)
    history = [*opened(), ev("reap", asked, actor="ann", reason="demo over")]
    assert preview_status(POLICY, history, asked - timedelta(seconds=1)).action is None
    status = preview_status(POLICY, history, asked)
    assert (status.action, status.expires_at) == ("reap", asked)
    assert status.reason == "reaped by hand by ann: demo over"


def test_a_reap_request_for_a_pr_that_is_no_preview_does_nothing() -> None:
    history = [ev("opened", T0), ev("reap", T0 + HOUR, reason="x")]
    assert preview_status(POLICY, history, T0 + HOUR).state == "unknown"


def test_quota_refuses_the_newcomer_unless_the_policy_evicts() -> None:
    live = {
        "shop/web#1": preview_status(POLICY, opened(T0), T0 + HOUR),
        "shop/web#2": preview_status(POLICY, [*opened(T0 + HOUR), ev("updated", T0)], T0 + HOUR),
    }
    refused = admit(POLICY, "web", "shop/web#3", live)
    assert not refused.admit and "quota is 2" in refused.reason
    evict = admit(POLICY.model_copy(update={"evict": "oldest"}), "web", "shop/web#3", live)
    assert (evict.admit, evict.evict) == (True, "shop/web#1")
    assert admit(POLICY, "web", "shop/web#1", live).admit  # counted once, as itself
    assert admit(POLICY.model_copy(update={"quota_per_team": None}), "web", "x#3", live).admit


def test_policy_checks_the_previews_block() -> None:
    base = "environments: {dev: {promote_from: build}}\n"
    with pytest.raises(PolicyError, match="max_ttl .1h. must not be shorter than ttl .2h."):
        load_policy(base + "previews: {ttl: 2h, max_ttl: 1h}")
    with pytest.raises(PolicyError, match="evict"):
        load_policy(base + "previews: {evict: newest}")
    policy = load_policy(base + "previews: {excluded_labels: [wip], dry_run: true}")
    assert policy.previews.dry_run and policy.previews.excluded_labels == ["wip"]


# --------------------------------------------------------------------------- properties

MINUTE = timedelta(minutes=1)
LABELS = st.lists(st.sampled_from(["preview", "deploy", "wip"]), max_size=3, unique=True)
KINDS = st.sampled_from(["opened", "updated", "labeled", "unlabeled", "closed", "extend"])
POLICIES = st.builds(
    Previews,
    ttl=st.integers(1, 180).map(lambda m: m * MINUTE),
    ttl_from=st.sampled_from(["last_activity", "created"]),
    max_ttl=st.integers(180, 600).map(lambda m: m * MINUTE),
    warn_before=st.integers(0, 60).map(lambda m: m * MINUTE),
    excluded_labels=st.sampled_from([[], ["wip"]]),
)


@st.composite
def histories(draw: st.DrawFn, until: bool = True) -> list[PreviewEvent | Mark]:
    """Events at few distinct instants (so that many share a timestamp), each period admitted."""
    events = []
    for i in range(draw(st.integers(1, 12))):
        kind = draw(KINDS)
        at = T0 + draw(st.integers(0, 8)) * 15 * MINUTE
        offset = draw(st.none() | st.integers(0, 1000))
        end = None if offset is None else at + offset * MINUTE
        events.append(
            PreviewEvent(
                kind=kind,
                event_id=f"e{i}",
                repo="shop/web",
                pr=7,
                occurred_at=at,
                labels=draw(LABELS),
                until=end if until and (kind == "extend" or draw(st.booleans())) else None,
            )
        )
    # Every instant may start a period; admit them all, as the worker would.
    marks = [Mark(kind="admitted", at=e.occurred_at, period=e.occurred_at) for e in events]
    return [*events, *marks]


NOWS = st.integers(0, 24 * 60).map(lambda m: T0 + m * MINUTE)


@settings(max_examples=300, deadline=None)
@given(POLICIES, histories(until=False), NOWS)
def test_never_reaped_before_its_ttl(policy: Previews, history: list, now: datetime) -> None:
    status = preview_status(policy, history, now)
    if status.action != "reap":
        return
    assert status.period is not None and status.last_activity is not None
    start = status.period
    assert now >= start + policy.ttl
    if policy.ttl_from == "last_activity":
        activity = [
            e.occurred_at
            for e in history
            if isinstance(e, PreviewEvent)
            and e.kind in ("opened", "updated", "labeled")
            and start <= e.occurred_at <= now
        ]
        assert now >= min(max(activity) + policy.ttl, start + policy.max_ttl)


@settings(max_examples=300, deadline=None)
@given(POLICIES, histories(), NOWS)
def test_never_beyond_max_ttl_whatever_the_extensions(
    policy: Previews, history: list, now: datetime
) -> None:
    status = preview_status(policy, history, now)
    if status.expires_at is None or status.period is None:
        return
    assert status.expires_at <= status.period + policy.max_ttl
    if status.state in ("active", "warned") and now >= status.period + policy.max_ttl:
        assert status.action == "reap"


@settings(max_examples=300, deadline=None)
@given(POLICIES, histories(), NOWS, st.randoms(use_true_random=False))
def test_same_timestamp_events_give_the_same_answer_in_any_order(
    policy: Previews, history: list, now: datetime, rnd: object
) -> None:
    shuffled = list(history)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert preview_status(policy, shuffled, now) == preview_status(policy, history, now)


@settings(max_examples=200, deadline=None)
@given(POLICIES, histories(), NOWS)
def test_a_warning_always_comes_before_the_expiry(
    policy: Previews, history: list, now: datetime
) -> None:
    status = preview_status(policy, history, now)
    if status.action == "warn":
        assert status.expires_at is not None and now < status.expires_at
        assert status.warn_at is not None and now >= status.warn_at


def _bare(item: PreviewEvent | Mark) -> bool:
    return (
        isinstance(item, PreviewEvent)
        and item.kind == "updated"
        and not item.labels
        and not item.until
    )


@settings(max_examples=200, deadline=None)
@given(POLICIES, histories(), NOWS, st.data())
def test_a_record_keeps_one_bare_update_of_a_run_and_the_same_answer(
    policy: Previews, history: list, now: datetime, data: st.DataObject
) -> None:
    from ferry.adapters.preview_store import SETTLED, Record

    record = Record(repo="shop/web", pr=7)
    # Events arrive in the order they happened, each up to SETTLED late (a webhook retried).
    events = [e for e in history if isinstance(e, PreviewEvent)]
    late = data.draw(st.lists(st.integers(0, 3), min_size=len(events), max_size=len(events)))
    arrival = sorted(
        range(len(events)), key=lambda n: events[n].occurred_at + late[n] * SETTLED / 4
    )
    for n in arrival:
        record.add_event(events[n])
    record.marks = [m for m in history if isinstance(m, Mark)]
    # Of bare updates with nothing else between them (in the rule's order), one is kept once
    # the later is settled.
    items = ordered(record.history())
    settled = max(e.occurred_at for e in record.events) - SETTLED
    for a, b in zip(items, items[1:], strict=False):
        if _bare(a) and _bare(b):
            assert b.occurred_at > settled, (a, b)
    assert preview_status(policy, record.history(), now) == preview_status(policy, history, now)


def test_a_record_keeps_the_last_push_before_a_period_ends() -> None:
    """Pushes to a preview, its label removed, more pushes: of the pushes with nothing between
    them, the record keeps the last, on each side of the removal (the ended period's last
    activity is the last push before it; found by the property test above, when one kept update
    for the whole PR answered 09:00), and every push of the last hour (one may still arrive late
    between them)."""
    from ferry.adapters.preview_store import Record

    policy = Previews(ttl="1h", ttl_from="last_activity", max_ttl="12h")
    history: list[PreviewEvent | Mark] = [
        *opened(),
        ev("updated", T0 + 1 * HOUR),
        ev("updated", T0 + 2 * HOUR),
        ev("unlabeled", T0 + 3 * HOUR, ("preview",)),
        ev("updated", T0 + 4 * HOUR),
        ev("updated", T0 + 5 * HOUR),
    ]
    record = Record(repo="shop/web", pr=7)
    record.marks = [m for m in history if isinstance(m, Mark)]
    for item in history:
        if isinstance(item, PreviewEvent):
            record.add_event(item)
    bare = [e.occurred_at for e in record.events if e.kind == "updated"]
    assert bare == [T0 + 2 * HOUR, T0 + 4 * HOUR, T0 + 5 * HOUR]
    status = preview_status(policy, record.history(), T0 + 6 * HOUR)
    assert status.last_activity == T0 + 2 * HOUR
    assert status == preview_status(policy, history, T0 + 6 * HOUR)


def test_a_busy_pr_keeps_a_small_record() -> None:
    from ferry.adapters.preview_store import SETTLED, Record

    record = Record(repo="shop/web", pr=7)
    record.add_event(ev("opened", T0, ("preview",)))
    minute = timedelta(minutes=1)
    for n in range(1, 501):
        record.add_event(ev("updated", T0 + n * minute))
    kept = [e.occurred_at for e in record.events if e.kind == "updated"]
    assert len(kept) == SETTLED // minute + 1  # the last hour's, and the one before it
    assert kept[-1] == T0 + 500 * minute
