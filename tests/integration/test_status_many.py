"""`ferry status` with a few hundred services: read in bulk (every values file in one pass, Redis
in batched rounds for all cells), it must say exactly what reading cell by cell says, which is
what `ferry explain` says."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ferry.adapters.gitops import GitOpsRepo
from ferry.adapters.state import CandidateStore, EvidenceStore, PromotionStore, SignalStore
from ferry.app.explain import explanation
from ferry.app.reports import status
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
            states[one.state] = states.get(one.state, 0) + 1
    assert printed["services"] == found.table
    assert printed["decisions"] == found.decided
    # The situation covers many states, not one repeated (else this would prove little).
    assert len(states) >= 4, states
