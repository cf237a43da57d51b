"""`ferry explain SERVICE ENV` says where a digest stands and why, from the same facts and the
same evaluation gate-evaluator uses."""

from __future__ import annotations

import json

import pytest

from tests.helpers import Cluster, digest_of, run_cli, wait_until


def explain(capsys, service: str, env: str) -> dict:  # noqa: ANN001
    code, out, err = run_cli(capsys, "explain", service, env, "--json")
    assert code == 0, err
    return json.loads(out)


def test_explain_follows_a_digest_from_build_to_staging(env: Cluster, capsys) -> None:  # noqa: ANN001
    env.init_repo(["api"])
    first = explain(capsys, "api", "dev")
    assert first["state"] == "nothing to promote"
    assert first["reasons"] == ["no successful build has been seen"]

    env.start("gate-evaluator")
    env.start("pr-writer")
    d = digest_of("explain")
    env.build("api", d)
    env.wait_pinned("api", "dev", d)
    env.merged_pr(lambda pr: pr.head.startswith("ferry/dev/api/"))  # main moves first
    dev = explain(capsys, "api", "dev")
    assert dev["state"] == "up to date" and dev["pinned"] == d
    assert dev["pull_request"]["state"] == "merged"

    staging = explain(capsys, "api", "staging")
    assert staging["state"] == "waiting" and staging["next_digest"] == d
    assert staging["gates"] == [
        {"gate": "ci", "status": "waiting", "reason": "waiting: no green CI for this digest in dev"}
    ]
    env.build("api", d, env="dev", check="integration", status="failure")
    wait_until(
        lambda: "(failed: integration)" in explain(capsys, "api", "staging")["gates"][0]["reason"],
        10,
        "the red check in the explanation",
    )
    code, out, _ = run_cli(capsys, "explain", "api", "staging")
    assert code == 0
    assert "api in staging: waiting" in out
    assert (
        "gate ci          waiting  no green CI for this digest in dev (failed: integration)" in out
    )

    env.build("api", d, env="dev", check="integration")
    env.wait_pinned("api", "staging", d)
    done = explain(capsys, "api", "staging")
    assert done["state"] == "up to date"
    assert done["gates"][0]["status"] == "passed"

    prod = explain(capsys, "api", "prod")
    assert prod["state"] == "waiting" and prod["source"] == "staging"
    assert [g["gate"] for g in prod["gates"]] == ["approval", "soak", "windows"]
    approval, soak, _windows = prod["gates"]  # windows depend on today's clock: not asserted
    assert approval["status"] == "waiting"
    assert approval["reason"].startswith("waiting: approvals 0/1 (from release-lead, team:sre)")
    assert soak["status"] == "waiting" and "soaking in staging" in soak["reason"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["explain", "api", "qa"], "unknown environment 'qa'"),
        (["explain", "API", "dev"], "service must be a DNS label"),
        (["explain", "db", "dev"], "service 'db' has no values file envs/dev/db/values.yaml"),
    ],
)
def test_explain_mistakes_are_one_line(env: Cluster, capsys, argv, needle) -> None:  # noqa: ANN001
    env.init_repo(["api"])
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
