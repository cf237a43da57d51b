"""Gather a decision's snapshot from main and Redis: the one place gate-evaluator, `ferry
explain` and `ferry status` read what `ferry.core.decision.decide` looks at, so they cannot
disagree."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from ferry.adapters.bus import Bus
from ferry.adapters.gitops import MainSnapshot
from ferry.adapters.state import (
    CandidateStore,
    DeployStore,
    EvidenceStore,
    HoldStore,
    LiveStore,
    PromotionStore,
    RollbackStore,
    SignalStore,
)
from ferry.app.batch import read_batched
from ferry.core.decision import PromotionView, Snapshot, next_digest
from ferry.core.events import promotion_id
from ferry.core.evidence import Evidence
from ferry.core.policy import BUILD, EnvironmentPolicy


def gather(
    bus: Bus,
    main: MainSnapshot,
    service: str,
    target: str,
    now: datetime,
    digest: str | None = None,
    source: str | None = None,
) -> Snapshot:
    """The snapshot for moving DIGEST into TARGET (default: the digest that would move next,
    from the environment TARGET is promoted from), its Redis reads pipelined in a round trip or
    two (ferry.app.batch: the reads that depend on others, such as the candidate's promotion,
    take the second)."""

    def read(bus: Bus) -> Snapshot:
        policy = main.policy
        candidates = CandidateStore(bus)
        env_policy, src, pinned_source = _source(main, service, target, source)
        candidate = candidates.get(service, target)
        dig = digest if digest is not None else next_digest(src, pinned_source, candidate)
        promotions = PromotionStore(bus)
        pinned_target = main.pinned(service, target)
        live_since = None
        if dig is not None and src != BUILD:
            live_since = LiveStore(bus).since(service, src, dig)
            if live_since is None and pinned_source == dig:
                # Pinned by hand, or merged before Ferry kept track: the soak starts when seen
                # (gate-evaluator records it; explain counts it the same way).
                live_since = now
        live_when = main.environment(src, service).live_when if src != BUILD else "merged"
        return Snapshot(
            service=service,
            source=src,
            target=target,
            env_policy=env_policy,
            now=now,
            digest=dig,
            pinned_target=pinned_target,
            pinned_source=pinned_source,
            build_rank=candidates.build_rank(service, dig) if dig else None,
            author=candidates.author(service, dig) if dig else None,
            live_since=live_since,
            evidence=EvidenceStore(bus).get(service, dig, src) if dig else Evidence(),
            words=SignalStore(bus).get(service, target, dig) if dig else (),
            teams=dict(policy.approvers.teams),
            candidate=candidate,
            promotion=_seen(main, promotions, service, target, dig, pinned_target),
            candidate_promotion=(
                _seen(main, promotions, service, target, candidate.digest, pinned_target)
                if candidate
                else None
            ),
            policy_error=main.policy_error,
            rolled_back=_rolled_back(bus, service, target, dig),
            hold=HoldStore(bus).get(target, service),
            source_live_when=live_when,
            deployed=DeployStore(bus).get(service, src) if live_when != "merged" else None,
        )

    return read_batched(bus, read, hint=("gather", service, target, digest, source))


def _source(
    main: MainSnapshot, service: str, target: str, source: str | None
) -> tuple[EnvironmentPolicy, str, str | None]:
    """TARGET's policy for SERVICE, the environment it is promoted from (SOURCE when given),
    and what that one pins on main (None for builds)."""
    env_policy = main.environment(target, service)  # unknown environment: PolicyError
    src = source or env_policy.promote_from
    return env_policy, src, main.pinned(service, src) if src != BUILD else None


def without_digest(
    bus: Bus, main: MainSnapshot, cells: list[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The (service, target) CELLS that have no digest to move, each with the environment it is
    promoted from, read as `gather` reads what names the digest (the candidate, what the source
    pins) and nothing else: with no digest, `decide`'s first rule answers from the source alone,
    whatever else Redis holds, and whatever the service and target (`nothing_to_move`). For
    `ferry status`, which decides one such snapshot per source for all of them and gathers only
    the other cells (tests/integration/test_status_many.py checks, over generated states, that
    it says what `ferry explain` says)."""

    def read(bus: Bus) -> dict[tuple[str, str], str]:
        candidates = CandidateStore(bus)
        out: dict[tuple[str, str], str] = {}
        for service, target in cells:
            _, src, pinned_source = _source(main, service, target, None)
            # The candidate names the digest only for an environment promoted from builds.
            candidate = candidates.get(service, target) if src == BUILD else None
            if next_digest(src, pinned_source, candidate) is None:
                out[(service, target)] = src
        return out

    return read_batched(bus, read)


def nothing_to_move(
    main: MainSnapshot, service: str, target: str, source: str, now: datetime
) -> Snapshot:
    """The snapshot of (SERVICE, TARGET), promoted from SOURCE, when no digest would move (as
    `without_digest` found it): what `gather` reads then."""
    return Snapshot(
        service=service,
        source=source,
        target=target,
        env_policy=main.environment(target, service),
        now=now,
        digest=None,
    )


def _seen(
    main: MainSnapshot,
    promotions: PromotionStore,
    service: str,
    target: str,
    digest: str | None,
    pinned_target: str | None,
) -> PromotionView | None:
    """DIGEST's promotion into TARGET as Ferry heard it, marked reverted when its merge is in
    main's history but main pins something else (reverted, or edited by hand)."""
    view = promotions.view(promotion_id(service, digest, target)) if digest else None
    if view is None or view.state != "merged" or pinned_target == view.digest:
        return view
    if view.merge_commit is None or not main.contains(view.merge_commit):
        return view  # merged on the forge, not fetched here yet
    return replace(view, reverted=True)


def _rolled_back(bus: Bus, service: str, target: str, digest: str | None) -> str | None:
    record = RollbackStore(bus).get(service, target, digest) if digest else None
    if record is None:
        return None
    who = f" by {record['actor']}" if record.get("actor") else ""
    why = f": {record['reason']}" if record.get("reason") else ""
    return f"{who}{why}".strip()
