"""Every cell's snapshot at once, for `ferry status` (10,000 services x 3 environments).

`gather` (app/snapshot.py) stays the one reader: each cell's snapshot is what `gather` returns
for it. What changes is how its reads are served. Through `read_batched`, every cell's `gather`
runs once per round (a first round only to learn which keys it reads), and the keys go through
redis-py's pipeline, command by command. Here, before any `gather` runs, the keys a cell will
read are planned from what main pins and the candidate (`_plan`) and fetched in bulk, commands
packed by hand into one write and their replies read back in order; then `gather` runs once per
cell against what was fetched. A plan that missed a key (a read `gather` makes that `_plan` does
not know) costs only speed: that cell's `gather` notes what it lacked, the keys are fetched, and
the cell is gathered again, as `read_batched` would. tests/integration/test_status_many.py checks,
over generated states, that status says what `ferry explain` says cell by cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, cast

from ferry.adapters import pipelined
from ferry.adapters.bus import Bus
from ferry.adapters.gitops import MainSnapshot
from ferry.adapters.state import (
    CandidateStore,
    DeployStore,
    EvidenceStore,
    HoldStore,
    PromotionStore,
    RollbackStore,
    SignalStore,
)
from ferry.app import batch
from ferry.app.snapshot import _source, gather, without_digest
from ferry.core.decision import Snapshot
from ferry.core.events import promotion_id
from ferry.core.policy import BUILD

Cell = tuple[str, str]
Wanted = pipelined.Wanted


@dataclass
class Cost:
    """What reading every cell cost: round trips, the commands they carried, and how often a
    read lacked a key the plan did not know and ran again (a cell's `gather`, or the pass over
    the cells with no digest)."""

    round_trips: int = 0
    commands: int = 0
    again: int = 0


@dataclass
class Found:
    """What was read of every cell: the snapshot of each cell with a digest to move, as `gather`
    reads it, and the source of each cell with none, as `without_digest` reads it."""

    gathered: dict[Cell, Snapshot]
    without_digest: dict[Cell, str]


def snapshots(
    bus: Bus, main: MainSnapshot, cells: list[Cell], now: datetime, cost: Cost | None = None
) -> Found:
    """What `gather` reads of each (service, target) of CELLS (see Found)."""
    reads = _Reads(bus, cost or Cost())
    plan = _Plan(bus, main)
    # What names each cell's digest: main, and for an environment promoted from builds the
    # candidate. The cells whose digest main names are planned whole at once.
    for service, target in cells:
        plan.cell(service, target)
    reads.fetch(plan.wanted)
    plan.wanted = []
    for service, target in plan.by_candidate:
        plan.after_candidate(reads.stand, service, target)
    reads.fetch(plan.wanted)
    # The cells the plan found no digest for are read as far as what names it; any other, and
    # any of those that has one after all, is gathered whole.
    still = [cell for cell in cells if cell not in plan.moving]
    settled = reads.run(lambda view: without_digest(view, main, still))
    rest = [cell for cell in cells if cell not in settled]
    return Found(reads.each(rest, lambda view, c: gather(view, main, c[0], c[1], now)), settled)


class _Plan:
    """The keys `gather` reads for a cell, as far as they can be known before it runs."""

    def __init__(self, bus: Bus, main: MainSnapshot) -> None:
        self.main = main
        self.key = bus.settings.key
        self.candidates = CandidateStore(bus)
        self.evidence = EvidenceStore(bus)
        self.words = SignalStore(bus)
        self.promotions = PromotionStore(bus)
        self.rollbacks = RollbackStore(bus)
        self.holds = HoldStore(bus)
        self.deployed = DeployStore(bus)
        self.wanted: list[Wanted] = []
        self.held: set[str] = set()  # the environments whose holds are planned (one hash each)
        self.by_candidate: list[Cell] = []
        self.moving: set[Cell] = set()  # the cells with a digest to move, as far as planned

    def _want(self, command: str, key: str, field: str = "") -> None:
        # A key planned twice (the same build's time for two cells) is only fetched twice.
        self.wanted.append((command, key.encode(), field.encode()))

    def cell(self, service: str, target: str) -> None:
        _, src, pinned_source = _source(self.main, service, target, None)
        if src == BUILD or pinned_source is not None:
            self._want("hgetall", self.candidates._key(service, target))
            self.by_candidate.append((service, target))
        if src != BUILD and pinned_source is not None:
            self.digest(service, target, src, pinned_source)

    def after_candidate(self, stand: batch._Stand, service: str, target: str) -> None:
        """The keys read about the candidate of (SERVICE, TARGET), now fetched: for a target
        promoted from builds, everything about its digest; for any, its promotion."""
        raw = stand.hashes.get(self.candidates._key(service, target).encode(), {})
        if b"digest" not in raw:
            return
        digest = raw[b"digest"].decode()
        if _source(self.main, service, target, None)[1] == BUILD:
            self.digest(service, target, BUILD, digest)
        else:
            self._want("hgetall", self.promotions._key(promotion_id(service, digest, target)))

    def digest(self, service: str, target: str, src: str, digest: str) -> None:
        """The keys read about moving DIGEST from SRC into TARGET."""
        self.moving.add((service, target))
        want, key = self._want, self.key
        if src != BUILD:
            want("hget", key("live", service, src), digest)
            if self.main.environment(src, service).live_when != "merged":
                want("hgetall", self.deployed._key(service, src))
        want("get", key("built", service, digest))
        want("get", key("author", service, digest))
        want("hgetall", self.evidence._key(service, digest, src))
        want("hgetall", self.words._key(service, target, digest))
        want("hgetall", self.promotions._key(promotion_id(service, digest, target)))
        want("hget", self.rollbacks._key(service, target), digest)
        if target not in self.held:
            self.held.add(target)
            want("hgetall", self.holds._key(target))


class _Reads:
    """A stand-in client (batch._Stand) filled in bulk, and the code that reads through it run
    until it lacks nothing."""

    def __init__(self, bus: Bus, cost: Cost) -> None:
        self.bus = bus
        self.cost = cost
        self.stand = batch._Stand()
        self.view = cast(Bus, batch._ReadBus(bus, self.stand))

    def fetch(self, wanted: list[Wanted]) -> None:
        if not wanted:
            return
        if self.bus.settings.redis_cluster:  # keys on many nodes: redis-py's cluster pipeline
            answers = self.bus.round_trip(partial(batch._fetch, wanted))
        else:
            answers = pipelined.read(self.bus.redis, wanted)
        self.cost.round_trips += 1
        self.cost.commands += len(wanted)
        batch._keep(self.stand, wanted, answers)

    def run(self, read: Any) -> Any:
        for _ in range(batch.MAX_ROUNDS):
            self.stand.missing.clear()
            result = read(self.view)
            if not self.stand.missing:
                return result
            self.cost.again += 1
            self.fetch(sorted(self.stand.missing))
        raise RuntimeError(f"a bulk read still lacked keys after {batch.MAX_ROUNDS} rounds")

    def each(self, cells: list[Cell], read: Any) -> dict[Cell, Any]:
        """READ(view, cell) for each of CELLS, run again (after one fetch for all) only for the
        cells that lacked something."""
        out: dict[Cell, Any] = {}
        missing = self.stand.missing
        for _ in range(batch.MAX_ROUNDS):
            lacking: set[Wanted] = set()
            again = []
            for cell in cells:
                missing.clear()
                result = read(self.view, cell)
                if missing:
                    lacking |= missing
                    again.append(cell)
                else:
                    out[cell] = result
            if not again:
                return out
            self.cost.again += len(again)
            self.fetch(sorted(lacking))
            cells = again
        raise RuntimeError(f"a bulk read still lacked keys after {batch.MAX_ROUNDS} rounds")
