"""`ferry status` with a few hundred services: read in bulk (every values file in one pass, Redis
in batched rounds for all cells), it must say exactly what reading cell by cell says, which is
what `ferry explain` says."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ferry.adapters.canary_state import VerifiedStore
from ferry.adapters.gitops import GitOpsRepo, MainSnapshot
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
from ferry.app import batch, bulk, reports
from ferry.app.canary import canary_state
from ferry.app.explain import explanation
from ferry.app.reports import Status, status
from ferry.app.snapshot import gather
from ferry.core.deployments import Deployment
from ferry.core.events import promotion_id
from ferry.core.evidence import Word
from tests.helpers import Cluster, digest_of, pin_digest, run_cli

N = 240
POLICY = """\
environments:
  dev: {promote_from: build, auto_merge: true}
  staging: {promote_from: dev, gates: {ci: {}}, auto_merge: true}
  prod:
    promote_from: staging
    gates:
      approval: {min_approvals: 1, approvers: [release-lead]}
      soak: {min_duration: 0s}
    windows:
      - {deny: "0 0 1 1 *", duration: 1h}
"""


def names() -> list[str]:
    return [f"svc-{i:03d}" for i in range(N)]


def situation(env: Cluster) -> None:
    """A mix: nothing built, dev pinned, staging waiting for or ready with CI, prod PRs open,
    approved, or up to date."""

    def change(clone: Path) -> None:
        (clone / "ferry.yaml").write_text(POLICY)
        for i, s in enumerate(names()):
            d = digest_of(s)
            if i % 3:
                pin_digest(clone, "dev", s, d)
            if i % 4 == 1:
                pin_digest(clone, "staging", s, d)
            if i % 8 == 1:
                pin_digest(clone, "prod", s, d)

    env.commit_by_hand("a few hundred services in many states", change)
    now = datetime.now(UTC)
    for i, s in enumerate(names()):
        d = digest_of(s)
        if i % 6 == 2:
            EvidenceStore(env.bus).record_check(s, d, "dev", None, "success", None)
        if i % 8 == 5:
            pid = promotion_id(s, d, "prod")
            PromotionStore(env.bus).remember(
                pid, service=s, digest=d, source_env="staging", target_env="prod", state="open"
            )
            CandidateStore(env.bus).choose(s, "prod", d, now.timestamp(), pid)
            if i % 16 == 5:
                at = now - timedelta(minutes=1)
                SignalStore(env.bus).record(Word("approval", "release-lead", d, "prod", "", at), s)


def agrees(env: Cluster, main: MainSnapshot, found: Status, s: str, e: str) -> str:
    """What status decided for SERVICE in ENV is what `ferry explain` says; returns the state."""
    one = explanation(env.bus, main, s, e, datetime.now(UTC))
    bulk = found.decided[s][e]
    assert (bulk["state"], bulk["digest"], bulk["reasons"]) == (
        one.state,
        one.next_digest,
        one.reasons,
    ), (s, e)
    assert bulk["actions"] == [
        a["kind"] for a in one.actions if a["kind"] not in ("wait", "nothing")
    ], (s, e)
    return one.state


def test_status_says_what_each_cell_says(env: Cluster, capsys) -> None:  # noqa: ANN001
    env.init_repo(names())
    situation(env)

    found = status(env.settings)
    code, out, err = run_cli(capsys, "status", "--json")
    assert code == 0, err
    printed = json.loads(out)

    # Cell by cell, through a repository object of its own (no bulk read), as explain reads.
    main = GitOpsRepo(str(env.repo_path), env.root / "cell-by-cell").at_main()
    assert sorted(found.table) == names()
    states: dict[str, int] = {}
    for s in names():
        for e in ("dev", "staging", "prod"):
            assert found.table[s][e] == main.pinned(s, e), (s, e)
            state = agrees(env, main, found, s, e)
            states[state] = states.get(state, 0) + 1
    assert printed["services"] == found.table
    assert printed["decisions"] == found.decided
    # The situation covers many states, not one repeated (else this would prove little).
    assert len(states) >= 4, states


# Staging counts a digest live only when Argo CD reports it synced: status then reads what Argo
# CD reported about each service there, and when each digest went live.
POLICY_SYNCED = POLICY.replace(
    "staging: {promote_from: dev,", "staging: {promote_from: dev, live_when: synced,"
)


def random_situation(
    env: Cluster, rnd: random.Random, services: list[str], policy: str = POLICY
) -> None:
    """Generated states: any environment pinned or not, candidates for environments promoted
    from builds or not, holds, evidence, words, promotions in every state, rollbacks, canaries,
    live times and Argo CD's reports."""
    now = datetime.now(UTC)
    envs = ("dev", "staging", "prod")

    def change(clone: Path) -> None:
        (clone / "ferry.yaml").write_text(policy)
        for s in services:
            for e in envs:
                if rnd.random() < 0.5:
                    pin_digest(clone, e, s, digest_of(f"{s}-{rnd.randint(0, 2)}"))

    env.commit_by_hand("generated pins", change)
    holds = HoldStore(env.bus)
    if rnd.random() < 0.5:
        holds.hold(rnd.choice(envs), None, "alice", "freeze", now)
    for s in services:
        for e in envs:
            d = digest_of(f"{s}-{rnd.randint(0, 2)}")
            roll = rnd.random()
            if roll < 0.3:
                pid = promotion_id(s, d, e)
                CandidateStore(env.bus).choose(s, e, d, now.timestamp() - rnd.randint(0, 9), pid)
                state = rnd.choice(["requested", "open", "merged", "closed"])
                PromotionStore(env.bus).remember(
                    pid, service=s, digest=d, target_env=e, state=state, pr=rnd.randint(1, 99)
                )
            if roll < 0.15:
                holds.hold(e, s, "bob", "", now)
            if rnd.random() < 0.3:
                EvidenceStore(env.bus).record_check(s, d, rnd.choice(envs), None, "success", None)
            if rnd.random() < 0.1:
                at = now - timedelta(minutes=1)
                SignalStore(env.bus).record(Word("approval", "release-lead", d, e, "", at), s)
            if rnd.random() < 0.1:
                RollbackStore(env.bus).mark(s, e, d, actor="carol", reason="bad")
            if rnd.random() < 0.1:
                VerifiedStore(env.bus).set(s, e, d)
            if rnd.random() < 0.3:
                LiveStore(env.bus).mark(s, e, d, now - timedelta(minutes=rnd.randint(0, 9)))
            if rnd.random() < 0.3:
                since = now - timedelta(minutes=5)
                DeployStore(env.bus).put(
                    s, e, Deployment(d, f"{s}-{e}", "Synced", "Healthy", now, since, since)
                )


@pytest.mark.parametrize(
    ("seed", "policy"), [(1, POLICY), (2, POLICY), (3, POLICY), (4, POLICY_SYNCED)]
)
def test_status_over_generated_states_says_what_each_cell_says(
    env: Cluster, seed: int, policy: str, capsys
) -> None:  # noqa: ANN001
    """`ferry status` reads a cell with no digest to move only as far as what names the digest,
    canaries only where one ran, and the other cells' keys planned and fetched in bulk before
    `gather` runs on them (app/bulk.py): over generated states, every cell must still say what
    `ferry explain` says, and every canary must be shown."""
    rnd = random.Random(seed)
    services = [f"svc-{i:02d}" for i in range(30)]
    env.init_repo(services)
    random_situation(env, rnd, services, policy)

    found = status(env.settings)
    main = GitOpsRepo(str(env.repo_path), env.root / "cell-by-cell").at_main()
    # What bulk.py plans is all that gather reads: two round trips, no cell gathered twice.
    cost = bulk.Cost()
    cells = [(s, e) for s in services for e in ("dev", "staging", "prod")]
    bulk.snapshots(env.bus, main, cells, datetime.now(UTC), cost)
    assert cost.round_trips <= 2 and cost.again == 0, cost
    states: dict[str, int] = {}
    for s in services:
        for e in ("dev", "staging", "prod"):
            state = agrees(env, main, found, s, e)
            states[state] = states.get(state, 0) + 1
            shown = found.watched.get(s, {}).get(e)
            assert shown == canary_state(env.bus, main.policy, s, e), (s, e)
    assert states.get("nothing to promote", 0) and len(states) >= 4, states


def test_a_key_the_plan_does_not_know_is_fetched_and_the_cell_gathered_again(env: Cluster) -> None:
    """bulk.py serves `gather` from keys it planned; a read it did not plan (here: none planned
    at all) is noted by `gather`, fetched, and that cell gathered again: every snapshot is still
    what `gather` reads alone."""
    rnd = random.Random(5)
    services = [f"svc-{i:02d}" for i in range(30)]
    env.init_repo(services)
    random_situation(env, rnd, services, POLICY_SYNCED)
    main = GitOpsRepo(str(env.repo_path), env.root / "cell-by-cell").at_main()
    now = datetime.now(UTC)
    cells = [(s, e) for s in services for e in ("dev", "staging", "prod")]

    cost = bulk.Cost()
    got = bulk._Reads(env.bus, cost).each(cells, lambda view, c: gather(view, main, *c, now))
    assert got == {(s, e): gather(env.bus, main, s, e, now) for s, e in cells}
    assert cost.again >= len(cells) and 2 <= cost.round_trips <= batch.MAX_ROUNDS, cost


def test_status_decided_in_two_processes_says_the_same(env: Cluster, capsys) -> None:  # noqa: ANN001
    """With many cells, status reads and decides the second half, and its canaries, in a
    forked child (app/split.py): as a process of its own, made to split 90 cells, it prints what
    one process prints."""
    rnd = random.Random(6)
    services = [f"svc-{i:02d}" for i in range(30)]
    env.init_repo(services)
    random_situation(env, rnd, services, POLICY_SYNCED)
    code, out, err = run_cli(capsys, "status", "--json")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["canaries"] and printed["decisions"]  # something to compare
    assert split_in_two(env, ["status", "--json"]) == printed


def split_in_two(env: Cluster, argv: list[str]) -> object:
    """What `ferry ARGV` (--json) prints as a process of its own, made to split 90 cells (a
    core free, whatever the load), having forked one child."""
    script = """if True:
        import os, sys
        from ferry.app import split
        split.SPLIT_AT, split._core_free = 2, lambda: True
        forks, fork = [], os.fork
        os.fork = lambda: forks.append(1) or fork()
        from ferry.cli.main import main
        try:
            main(sys.argv[1:])
        finally:
            print(len(forks), file=sys.stderr)
    """
    proc = subprocess.run(
        [sys.executable, "-c", script, *argv], env=env.env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "1"  # one child forked
    return json.loads(proc.stdout)


@pytest.mark.parametrize("as_json", [False, True])
def test_status_as_a_program_writes_everything_and_skips_the_teardown(
    env: Cluster, capsys, as_json: bool
) -> None:  # noqa: ANN001
    """`ferry status` as a program of its own ends once its output is written, without the
    interpreter's teardown (no atexit handler runs): what it prints, through a pipe, is all of
    what it prints in-process."""
    rnd = random.Random(7)
    services = [f"svc-{i:02d}" for i in range(30)]
    env.init_repo(services)
    random_situation(env, rnd, services, POLICY_SYNCED)
    argv = ["status", "--json"] if as_json else ["status"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err

    script = """if True:
        import atexit, sys
        atexit.register(lambda: print("torn down", file=sys.stderr))
        sys.argv = ["ferry", *sys.argv[1:]]
        from ferry.cli.main import main
        main()
    """
    proc = subprocess.run(
        [sys.executable, "-c", script, *argv], env=env.env(), capture_output=True, text=True
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == out


@pytest.mark.parametrize("seed", [8, 9])
def test_pending_reads_in_bulk_what_each_cell_reads(env: Cluster, seed: int) -> None:
    """`ferry status --pending` reads every cell as status does (app/bulk.py): over generated
    states, what waits and on whom is what gathering each cell alone says."""
    rnd = random.Random(seed)
    services = [f"svc-{i:02d}" for i in range(30)]
    env.init_repo(services)
    random_situation(env, rnd, services, POLICY_SYNCED if seed % 2 else POLICY)
    main = GitOpsRepo(str(env.repo_path), env.root / "cell-by-cell").at_main()
    now = datetime.now(UTC)
    cells = [(s, e) for s in services for e in ("dev", "staging", "prod")]
    cells = [cell for cell in cells if main.values_exists(*cell)]

    found = reports._pending(env.bus, main, cells, now)
    assert found == [reports._waits(gather(env.bus, main, s, e, now)) for s, e in cells]
    waiting = [p for p in found if p is not None]
    assert waiting and len(waiting) < len(cells)  # something waits, something is settled
    assert len({p["state"] for p in waiting}) >= 2


def test_pending_decided_in_two_processes_says_the_same(env: Cluster, capsys) -> None:  # noqa: ANN001
    """`ferry status --pending` with many cells reads and decides the second half in a forked
    child, as status does: made to split 90 cells, it prints what one process prints."""
    rnd = random.Random(6)
    services = [f"svc-{i:02d}" for i in range(30)]
    env.init_repo(services)
    random_situation(env, rnd, services, POLICY_SYNCED)
    code, out, err = run_cli(capsys, "status", "--pending", "--json")
    assert code == 0, err
    printed = json.loads(out)
    assert printed  # something to compare
    assert split_in_two(env, ["status", "--pending", "--json"]) == printed
