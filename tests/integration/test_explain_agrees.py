"""`ferry explain --json` predicts exactly what gate-evaluator does: for each situation below, the
commands the worker publishes when it decides (its timer path) are the actions explain listed.
Real Redis, a real GitOps repository; explain runs through the CLI, the worker's decision through
its own handler code."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ferry.adapters.state import CandidateStore, EvidenceStore, PromotionStore, SignalStore
from ferry.core.events import promotion_id
from ferry.core.evidence import Word
from ferry.runtime.logging import get_logger
from ferry.runtime.worker import WorkerContext
from gate_evaluator.worker import consider
from tests.helpers import Cluster, digest_of, pin_digest, run_cli

POLICY = """\
environments:
  dev: {promote_from: build, auto_merge: true}
  staging: {promote_from: dev, gates: {ci: {}}, auto_merge: true}
  prod:
    promote_from: staging
    auto_merge: true
    gates:
      approval: {min_approvals: 1, approvers: [release-lead]}
      soak: {min_duration: 0s}
"""
D = digest_of("agree")
OLD = digest_of("agree-older")
COMMAND_OF = {"open": "open", "update_gates": "gates", "merge": "merge", "close": "close"}


def pins(**by_env: str) -> Callable[[Path], None]:
    def change(clone: Path) -> None:
        (clone / "ferry.yaml").write_text(POLICY)
        for env, digest in by_env.items():
            pin_digest(clone, env, "api", digest)

    return change


def nothing(env: Cluster) -> None:
    pass


def green_in_dev(env: Cluster) -> None:
    EvidenceStore(env.bus).record_check("api", D, "dev", None, "success", None)


def older_than_the_candidate(env: Cluster) -> None:
    green_in_dev(env)
    now = datetime.now(UTC).timestamp()
    candidates = CandidateStore(env.bus)
    candidates.record_build("api", D, now - 600)
    candidates.choose("api", "staging", OLD, now, promotion_id("api", OLD, "staging"))


def prod_pr_open(env: Cluster) -> None:
    pid = promotion_id("api", D, "prod")
    PromotionStore(env.bus).remember(
        pid, service="api", digest=D, source_env="staging", target_env="prod", state="open", pr=3
    )
    CandidateStore(env.bus).choose("api", "prod", D, datetime.now(UTC).timestamp(), pid)


def approved(env: Cluster) -> None:
    prod_pr_open(env)
    at = datetime.now(UTC) - timedelta(minutes=1)
    SignalStore(env.bus).record(Word("approval", "release-lead", D, "prod", "ok", at), "api")


def newer_replaces_an_open_prod_pr(env: Cluster) -> None:
    old_pid = promotion_id("api", OLD, "prod")
    PromotionStore(env.bus).remember(
        old_pid, service="api", digest=OLD, source_env="staging", target_env="prod", state="open"
    )
    now = datetime.now(UTC).timestamp()
    CandidateStore(env.bus).choose("api", "prod", OLD, now - 600, old_pid)
    CandidateStore(env.bus).record_build("api", D, now)


SITUATIONS = {
    "nothing built": ("dev", {}, nothing, []),
    "green CI in dev opens staging": ("staging", {"dev": D}, green_in_dev, ["open"]),
    "no green CI waits": ("staging", {"dev": D}, nothing, []),
    "older than the candidate": ("staging", {"dev": D}, older_than_the_candidate, []),
    "prod opens early": ("prod", {"staging": D}, nothing, ["open"]),
    "an approval updates the gates and merges": (
        "prod",
        {"staging": D},
        approved,
        ["update_gates", "merge"],
    ),
    "an open PR gets its gates shown": ("prod", {"staging": D}, prod_pr_open, ["update_gates"]),
    "a newer digest supersedes an open PR": (
        "prod",
        {"staging": D},
        newer_replaces_an_open_prod_pr,
        ["open", "close"],
    ),
    "already pinned": ("prod", {"staging": D, "prod": D}, nothing, []),
}


@pytest.mark.parametrize("name", list(SITUATIONS))
def test_explain_predicts_the_workers_commands(env: Cluster, capsys, name: str) -> None:  # noqa: ANN001
    target, pinned, prepare, expected = SITUATIONS[name]
    env.init_repo(["api"])
    env.commit_by_hand("the situation", pins(**pinned))
    prepare(env)

    code, out, err = run_cli(capsys, "explain", "api", target, "--json")
    assert code == 0, err
    predicted = [a["kind"] for a in json.loads(out)["actions"]]
    predicted = [k for k in predicted if k not in ("wait", "nothing")]

    ctx = WorkerContext(name="gate-evaluator", settings=env.settings, bus=env.bus, log=get_logger())
    consider(ctx, None, "api", target)
    published = [c["kind"] for c in env.entries("promotions")]

    assert predicted == expected
    assert published == [COMMAND_OF[k] for k in predicted]
