"""A gated promotion's pull request opens as soon as its digest is live in the source, shows its
unmet gates, follows the evidence, and merges when the last gate (time) opens: on the dot, after a
restart too, and once. A broken ferry.yaml is refused while the last valid one stays in force."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.helpers import Cluster, digest_of, run_cli, wait_until

POLICY = """\
environments:
  dev: {{promote_from: build, auto_merge: true}}
  staging: {{promote_from: dev, auto_merge: true}}
  prod:
    promote_from: staging
    auto_merge: true
    gates:
      approval: {{min_approvals: 1, approvers: [release-lead]}}
      soak: {{min_duration: {soak}, checks: [load-test]}}
{windows}
"""


PENDING_ALL = "unmet: approval (waiting), soak (waiting), windows (waiting)"


def set_policy(env: Cluster, soak: str, windows: str = "") -> None:
    def write(clone: Path) -> None:
        (clone / "ferry.yaml").write_text(POLICY.format(soak=soak, windows=windows))

    env.commit_by_hand("prod gates for the test", write)


def prod_pr(env: Cluster):  # noqa: ANN201
    return next((p for p in env.forge.list_prs() if "to prod" in p.title), None)


def staging_merge(env: Cluster):  # noqa: ANN201
    return env.merged_pr(lambda p: "to staging" in p.title)


def test_prod_pr_opens_early_shows_its_gates_and_merges_when_the_window_opens(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    env.init_repo(["api"])
    # A window that opens at a whole minute at least 35 s from now (cron counts minutes).
    opens = (datetime.now(UTC) + timedelta(seconds=95)).replace(second=0, microsecond=0)
    cron = f"{opens.minute} {opens.hour} * * *"
    window = f'      windows:\n        - {{allow: "{cron}", duration: 1h}}'
    set_policy(env, "3s", window)
    env.start("gate-evaluator", FERRY_TICK_S="15")  # the default: no scan helps the merge
    env.start("pr-writer")
    d = digest_of("gated")
    env.build("api", d, author="alice")
    env.wait_pinned("api", "dev", d)
    env.wait_pinned("api", "staging", d)
    assert datetime.now(UTC) < opens - timedelta(seconds=5), "setup too slow for this window"

    pr = wait_until(
        lambda: (p := prod_pr(env)) and "ferry/gates" in p.statuses and p,
        10,
        "the prod pull request, opened early with its gates",
    )
    assert pr.state == "open" and pr.statuses["ferry/gates"] == "pending"
    assert pr.status_descriptions["ferry/gates"] == PENDING_ALL
    assert "| approval | waiting |" in pr.body and "| windows | waiting |" in pr.body
    opened_after = (pr.created_at - staging_merge(env).merged_at).total_seconds()

    run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "release-lead")
    # The body and the status are two writes: wait for both.
    pr = wait_until(
        lambda: (
            (p := prod_pr(env))
            and "| approval | passed |" in p.body
            and p.status_descriptions["ferry/gates"] != PENDING_ALL
            and p
        ),
        10,
        "the approval in the PR's body and status",
    )
    assert pr.status_descriptions["ferry/gates"] == "unmet: soak (waiting), windows (waiting)"
    run_cli(
        capsys, "publish", "check", "--service", "api", "--digest", d, "--env", "staging",
        "--check", "load-test",
    )  # fmt: skip
    pr = wait_until(
        lambda: (
            (p := prod_pr(env))
            and p.status_descriptions["ferry/gates"] == ("unmet: windows (waiting)")
            and p
        ),
        10,
        "the soak to pass",
    )
    assert pr.state == "open" and "| soak | passed |" in pr.body
    explained = json.loads(run_cli(capsys, "explain", "api", "prod", "--json")[1])
    assert explained["next_change_at"] == opens.isoformat()

    env.wait_pinned("api", "prod", d, timeout=120)
    # The local forge moves main first, then records the merge on the PR.
    merged = wait_until(
        lambda: (p := env.forge.get_pr(pr.number)).merged_at is not None and p,
        10,
        "the merge recorded on the PR",
    )
    late = (merged.merged_at - opens).total_seconds()
    print(f"PR opened {opened_after:.2f}s after staging merged; merged {late:.2f}s after opening")
    assert merged.merged_at >= opens  # never before the window opens
    assert late < 15  # the due time woke it, not a scan every FERRY_TICK_S (15 s)
    wait_until(lambda: [c["env"] for c in env.changes("pr_merged")].count("prod") == 1, 10)


def test_a_restarted_gate_evaluator_merges_a_soaking_promotion_on_time_once(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    env.init_repo(["api"])
    set_policy(env, "6s")
    gate = env.start("gate-evaluator", FERRY_TICK_S="15")
    env.start("pr-writer")
    d = digest_of("soak-restart")
    env.build("api", d)
    env.wait_pinned("api", "staging", d)
    live = staging_merge(env).merged_at
    run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "release-lead")
    run_cli(
        capsys, "publish", "check", "--service", "api", "--digest", d, "--env", "staging",
        "--check", "load-test",
    )  # fmt: skip
    wait_until(
        lambda: (
            (p := prod_pr(env))
            and p.status_descriptions.get("ferry/gates") == ("unmet: soak (waiting)")
        ),
        10,
        "only the soak to wait",
    )
    env.kill(gate)
    time.sleep(1)
    env.start("gate-evaluator", FERRY_TICK_S="15")
    env.wait_pinned("api", "prod", d, timeout=30)
    # The local forge moves main first, then records the merge on the PR.
    merged = wait_until(
        lambda: (p := env.forge.get_pr(prod_pr(env).number)).merged_at is not None and p,
        10,
        "the merge recorded on the PR",
    )
    assert merged.merged_at >= live + timedelta(seconds=6)  # the soak was served in full
    assert (merged.merged_at - live).total_seconds() < 6 + 15  # by its due time, not a scan
    wait_until(lambda: [c["env"] for c in env.changes("pr_merged")].count("prod") == 1, 10)
    time.sleep(1)
    assert [c["env"] for c in env.changes("pr_merged")].count("prod") == 1
    assert len([p for p in env.forge.list_prs() if "to prod" in p.title]) == 1


def test_a_broken_ferry_yaml_is_refused_and_the_last_valid_one_holds(
    env: Cluster,
    capsys,  # noqa: ANN001
) -> None:
    env.init_repo(["api"])
    gate = env.start("gate-evaluator")
    writer = env.start("pr-writer")

    def break_it(clone: Path) -> None:
        text = (clone / "ferry.yaml").read_text()
        (clone / "ferry.yaml").write_text(text.replace("promote_from: dev", "promote_from: qa"))

    env.commit_by_hand("a typo in the policy", break_it)
    d = digest_of("under-broken-policy")
    env.build("api", d)
    env.wait_pinned("api", "dev", d)  # the old policy still promotes
    code, out, _ = run_cli(capsys, "explain", "api", "staging")
    assert code == 0
    assert "ferry.yaml:" in out and "unknown environment 'qa'" in out
    explained = json.loads(run_cli(capsys, "explain", "api", "staging", "--json")[1])
    line = int(explained["policy_error"].split(":")[1])
    broken = env.repo.read_main("ferry.yaml").splitlines()[line - 1]
    assert "promote_from: qa" in broken
    assert gate.poll() is None and writer.poll() is None
    refused = [a for a in env.entries("audit") if a["outcome"] == "refused"]
    assert len(refused) == 1 and "unknown environment 'qa'" in refused[0]["reason"]
    status = json.loads(run_cli(capsys, "status", "--json")[1])
    assert status["services"]["api"]["dev"] == d

    def fix_it(clone: Path) -> None:
        text = (clone / "ferry.yaml").read_text()
        (clone / "ferry.yaml").write_text(text.replace("promote_from: qa", "promote_from: dev"))

    env.commit_by_hand("fix the typo", fix_it)
    env.build("api", d, env="dev", check="integration")
    env.wait_pinned("api", "staging", d)
    assert (
        json.loads(run_cli(capsys, "explain", "api", "staging", "--json")[1])["policy_error"]
        is None
    )
