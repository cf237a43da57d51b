"""canary-watcher end to end on a real Redis and git: a merged `strategy: canary` promotion is
judged from the measurements on ferry:canary; it ends verified, paused for a person, or rolled
back by a merged rollback PR."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ferry.adapters.canary_state import CanaryStore
from tests.helpers import Cluster, digest_of, run_cli, wait_until

# prod takes every build, as a canary (no braces: the tests add to it with str.format).
PROD_CANARY = """\
environments:
  prod:
    promote_from: build
    auto_merge: true
    strategy: canary
"""
POLICY = (
    PROD_CANARY
    + """\
    gates:
      approval: {{min_approvals: 0, approvers: ["team:sre"]}}
    canary: {{count: 3, progress_deadline: {deadline}}}
approvers:
  teams: {{sre: [sre-oncall-1]}}
"""
)


def canary_cluster(env: Cluster, deadline: str = "30m") -> None:
    env.init_repo(["api"])

    def write(clone: Path) -> None:
        (clone / "ferry.yaml").write_text(POLICY.format(deadline=deadline))

    env.commit_by_hand("prod: builds go straight in, as a canary", write)
    env.start("gate-evaluator")
    env.start("pr-writer")
    env.start("canary-watcher")


def deploy(env: Cluster, digest: str) -> None:
    """Build DIGEST; wait until it is pinned in prod and its canary analysis runs."""
    env.build("api", digest)
    env.wait_pinned("api", "prod", digest)
    wait_until(
        lambda: (a := CanaryStore(env.bus).get("api", "prod")) and a.digest == digest,
        10,
        f"the canary of {digest[:19]} to start",
    )


def measure(capsys, digest: str, phase: str, metric: str = "error-rate", **kw: str) -> None:  # noqa: ANN001
    args = ["--service", "api", "--digest", digest, "--env", "prod", "--metric", metric]
    extra = [x for k, v in kw.items() for x in (f"--{k.replace('_', '-')}", v)]
    code, _, err = run_cli(capsys, "publish", "canary", *args, "--phase", phase, *extra)
    assert code == 0, err


def phase(env: Cluster) -> str:
    a = CanaryStore(env.bus).get("api", "prod")
    return a.phase if a else ""


def wait_phase(env: Cluster, wanted: str) -> None:
    wait_until(lambda: phase(env) == wanted, 10, f"the canary to be {wanted}")


def verified(env: Cluster, capsys, digest: str) -> None:  # noqa: ANN001
    for _ in range(3):
        measure(capsys, digest, "successful")
    wait_until(lambda: [c for c in env.changes("verified") if c["digest"] == digest], 10)


def test_a_passing_canary_ends_verified_and_ferry_shows_it(env: Cluster, capsys) -> None:  # noqa: ANN001
    canary_cluster(env)
    d = digest_of("good")
    deploy(env, d)
    measure(capsys, d, "successful", value="0.001")
    measure(capsys, d, "successful", metric="latency")

    def explained() -> dict:
        return json.loads(run_cli(capsys, "explain", "api", "prod", "--json")[1])["canary"]

    wait_until(lambda: "error-rate: 1/3 measurements judged" in explained()["reason"], 10)
    assert explained()["phase"] == "running"
    measure(capsys, d, "successful")
    measure(capsys, d, "successful")
    wait_until(lambda: "error-rate" not in explained()["reason"], 10, "error-rate to pass")
    assert phase(env) == "running"  # error-rate reached 3, but latency has 1 of 3
    measure(capsys, d, "successful", metric="latency")
    measure(capsys, d, "successful", metric="latency")
    change = wait_until(lambda: env.changes("verified"), 10, "verified")[0]
    assert change["digest"] == d and change["env"] == "prod"
    wait_phase(env, "verified")  # published first, then recorded
    code, out, _ = run_cli(capsys, "explain", "api", "prod")
    assert code == 0 and f"canary:          verified {d[:19]}" in out
    status = json.loads(run_cli(capsys, "status", "--json")[1])
    assert status["canaries"]["api"]["prod"]["verified"] == d
    wait_until(lambda: audited(env, "verified"), 10, "the audit record")


def audited(env: Cluster, outcome: str) -> list[dict[str, str]]:
    return [a for a in env.entries("audit") if a["action"] == "canary" and a["outcome"] == outcome]


def test_a_failing_canary_is_rolled_back_by_a_merged_rollback_pr(env: Cluster, capsys) -> None:  # noqa: ANN001
    canary_cluster(env)
    first, bad = digest_of("first"), digest_of("bad")
    deploy(env, first)  # never verified: the rollback pins the digest pinned before
    deploy(env, bad)
    measure(capsys, bad, "successful")
    started = time.monotonic()
    measure(capsys, bad, "failed", value="0.31")
    env.wait_pinned("api", "prod", first, timeout=10)
    print(f"rolled back {time.monotonic() - started:.3f}s after the deciding measurement")
    rollback = env.merged_pr(lambda p: "rollback" in p.labels)
    reverted = next(
        p for p in env.forge.list_prs() if bad[:19] in p.title and p.number != rollback.number
    )
    assert f"#{reverted.number}" in rollback.body
    assert "error-rate failed=0.31" in rollback.body
    wait_phase(env, "failed")
    assert CanaryStore(env.bus).get("api", "prod").rollback_to == first
    audit = wait_until(lambda: audited(env, "failed"), 10, "the audit record")
    assert "failed by error-rate failed=0.31" in audit[0]["reason"]
    # the rolled-back-to digest is not analysed again: it ran there before
    wait_until(lambda: env.changes("pr_merged")[-1].get("rollback_of") == bad, 10)
    time.sleep(0.3)
    assert CanaryStore(env.bus).get("api", "prod").digest == bad


def test_the_next_failure_rolls_back_to_the_last_verified_digest(env: Cluster, capsys) -> None:  # noqa: ANN001
    canary_cluster(env)
    good, middle, bad = digest_of("good"), digest_of("middle"), digest_of("bad")
    deploy(env, good)
    verified(env, capsys, good)
    deploy(env, middle)
    deploy(env, bad)  # supersedes the analysis of middle, which was never verified
    superseded = [a for a in env.entries("audit") if a["outcome"] == "superseded"]
    assert superseded and middle in superseded[0]["subject"]
    measure(capsys, bad, "failed")
    env.wait_pinned("api", "prod", good, timeout=10)


def test_a_measurement_delivered_twice_counts_once(env: Cluster, capsys) -> None:  # noqa: ANN001
    canary_cluster(env)
    d = digest_of("twice")
    deploy(env, d)
    measure(capsys, d, "successful", event_id="m-1")
    measure(capsys, d, "successful", event_id="m-1")
    measure(capsys, d, "successful", event_id="m-2")
    wait_until(
        lambda: (
            len(CanaryStore(env.bus).measurements(CanaryStore(env.bus).get("api", "prod"))) == 2
        ),
        10,
    )
    time.sleep(0.5)  # the duplicate has been handled (or not) by now: it must not count
    assert phase(env) == "running"
    measure(capsys, d, "successful", event_id="m-3")
    wait_phase(env, "verified")


def test_no_data_by_the_deadline_pauses_and_a_person_decides(env: Cluster, capsys) -> None:  # noqa: ANN001
    canary_cluster(env, deadline="2s")
    first, quiet = digest_of("first"), digest_of("quiet")
    deploy(env, first)
    wait_phase(env, "paused")  # nobody measured it within 2s: no_data is inconclusive
    code, _, err = run_cli(capsys, "canary", "promote", "api", "prod", "--as", "mallory")
    assert code == 2 and "not an approver" in err
    assert run_cli(capsys, "canary", "promote", "api", "prod", "--as", "sre-oncall-1")[0] == 0
    wait_phase(env, "verified")
    deploy(env, quiet)
    wait_phase(env, "paused")
    out = json.loads(run_cli(capsys, "explain", "api", "prod", "--json")[1])
    assert "no measurement for 2s" in out["canary"]["reason"]
    assert run_cli(capsys, "canary", "abort", "api", "prod", "--as", "sre-oncall-1")[0] == 0
    env.wait_pinned("api", "prod", first, timeout=10)
    code, _, err = run_cli(capsys, "canary", "abort", "api", "prod", "--as", "sre-oncall-1")
    assert code == 2 and "nothing to abort" in err
