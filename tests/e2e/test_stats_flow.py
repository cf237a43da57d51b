"""`ferry stats` after real promotions and a real rollback by the workers: two builds reach prod,
the second is rolled back; the figures agree with the merge commits' times and the build times."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ferry.adapters.git import git
from tests.helpers import Cluster, digest_of, run_cli, wait_until

POLICY = """\
environments:
  prod:
    promote_from: build
    auto_merge: true
approvers:
  teams: {sre: [sre-oncall-1]}
"""


def test_promotions_and_a_rollback_make_the_figures(env: Cluster, capsys: Any) -> None:
    env.init_repo(["api"])

    def write(clone: Path) -> None:
        (clone / "ferry.yaml").write_text(POLICY)

    env.commit_by_hand("prod straight from build", write)
    env.start("gate-evaluator")
    env.start("pr-writer")
    now = datetime.now(UTC).replace(microsecond=0)
    old, new = digest_of("stats-old"), digest_of("stats-new")
    built = {old: now - timedelta(hours=3), new: now - timedelta(hours=1)}
    env.build("api", old, built_at=built[old].isoformat())
    env.wait_pinned("api", "prod", old)
    env.build("api", new, built_at=built[new].isoformat())
    env.wait_pinned("api", "prod", new)
    code, _, err = run_cli(capsys, "rollback", "api", "prod", "--as", "sre-oncall-1")
    assert code == 0, err
    env.wait_pinned("api", "prod", old, timeout=20)

    merged = wait_until(lambda: len(env.changes("pr_merged")) == 3 and env.changes("pr_merged"))
    landed = {}
    for change in merged:
        seconds = git("show", "-s", "--format=%ct", change["merge_commit"], cwd=env.repo_path)
        landed[change["digest"], bool(change.get("rollback_of"))] = datetime.fromtimestamp(
            int(seconds), UTC
        )
    leads = sorted((landed[d, False] - built[d]).total_seconds() for d in (old, new))
    restore = (landed[old, True] - landed[new, False]).total_seconds()

    code, out, err = run_cli(capsys, "stats", "--json", "--since", "1d", "--env", "prod")
    assert code == 0, err
    [row] = [r for r in json.loads(out)["rows"] if r["service"] == "api"]
    assert (row["deployments"], row["rollbacks"], row["failed"]) == (2, 1, 1)
    assert row["change_failure_rate"] == 0.5
    assert row["lead_time"] == {"median_s": sum(leads) / 2, "p90_s": leads[1], "count": 2}
    assert row["time_to_restore"] == {"median_s": restore, "p90_s": restore, "count": 1}
