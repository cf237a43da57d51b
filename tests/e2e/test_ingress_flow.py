"""The ingress with the workers, against the fake forge: reviews as approvals (`via: [forge]`), a
promotion PR merged by a person on the forge, the reconcile pass that finds a merge no webhook
reported, and two ingress replicas that publish a retried delivery once."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.adapters.gitops import GitOpsRepo
from tests.forgefake import FakeForge
from tests.forgefake.hooks import Hooks, app_pr
from tests.forgefake.setup import start_fake, use_fake
from tests.helpers import Cluster, digest_of, run_cli, wait_until
from tests.ingress_server import spawn_ingress

SECRET = "e2e-hook-secret-7d2b"

# staging: merged by a person (no auto_merge); prod: one approval, from reviews on the PR only.
POLICY = """
  staging:
    promote_from: dev
    auto_merge: false
    gates: {ci: {}}
  prod:
    promote_from: staging
    auto_merge: true
    gates:
      approval: {min_approvals: 1, approvers: [release-lead], via: [forge]}
"""


def with_policy(env: Cluster) -> None:
    def edit(clone: Path) -> None:
        text = (clone / "ferry.yaml").read_text()
        head, _, rest = text.partition("  staging:")
        tail = rest[rest.index("\n# Approver groups") :]
        (clone / "ferry.yaml").write_text(head + POLICY.lstrip("\n") + tail)

    env.commit_by_hand("staging merged by people; prod approved by reviews", edit)


class Flow:
    def __init__(self, env: Cluster, fake: FakeForge) -> None:
        self.env = env
        self.fake = fake
        self.ingress: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start_ingress(self) -> None:
        extra = {
            **self.fake.settings_env(),
            "FERRY_WEBHOOK_SECRET": SECRET,
            "FERRY_CONSUMER": f"ingress-{len(self.env.procs)}",
        }
        proc, self.url = spawn_ingress(self.env.env(**extra), self.env.logs / "ingress.log")
        self.env.procs.append(proc)
        self.ingress = proc

    def stop_ingress(self) -> None:
        assert self.ingress is not None
        self.ingress.terminate()
        self.ingress.wait(timeout=15)

    @property
    def hooks(self) -> Hooks:
        return Hooks(self.fake, f"{self.url}/webhooks/{self.fake.flavour}", SECRET)

    def pr(self, title_start: str) -> Any:
        with self.fake.lock:
            found = [p for p in self.fake.pulls.values() if p.title.startswith(title_start)]
        return found[-1] if found else None

    def merge_by_hand(self, number: int) -> None:
        """A person presses merge on the forge."""
        with self.fake.lock:
            pr = self.fake.pulls[number]
            self.fake.merge(pr, method="merge", sha=None, message=None)


@pytest.fixture
def flow(env: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flow]:
    env.init_repo(["api"])
    with_policy(env)
    fake = start_fake(env.root, "github", env.repo_path)
    use_fake(monkeypatch, fake)
    env._repo = GitOpsRepo(remote=str(fake.repo), workdir=env.root / "fake-reader")
    f = Flow(env, fake)
    try:
        env.start("gate-evaluator", **fake.settings_env())
        env.start("pr-writer", **fake.settings_env())
        yield f
    finally:
        env.stop_all()
        fake.stop()


def to_staging_pr(flow: Flow, digest: str) -> Any:
    env = flow.env
    env.build("api", digest, author="alice")
    env.wait_pinned("api", "dev", digest)
    env.build("api", digest, env="dev", check="integration")
    # pr-writer has opened it, and reported so (a merge before that would be seen by pr-writer)
    wait_until(lambda: [c for c in env.changes("pr_opened") if c["env"] == "staging"], 20, "PR")
    return flow.pr("Promote api to staging")


def promotions(env: Cluster, target: str) -> list[dict[str, str]]:
    return [p for p in env.entries("promotions") if p["target_env"] == target]


def test_a_pr_merged_by_a_person_on_the_forge_starts_the_next_promotion(flow: Flow) -> None:
    env = flow.env
    flow.start_ingress()
    d = digest_of("merged-by-hand")
    pr = to_staging_pr(flow, d)
    assert promotions(env, "prod") == []
    flow.merge_by_hand(pr.number)
    assert flow.hooks.pull_request(pr.number, "closed", sender="carol").status_code == 202
    [merged] = wait_until(lambda: env.changes("pr_merged")[1:], 10, "staging's pr_merged")
    assert (merged["env"], merged["actor"], merged["digest"]) == ("staging", "carol", d)
    # staging's successor: prod's promotion is asked for (its PR opens early: a person approves)
    opened = wait_until(lambda: promotions(env, "prod"), 10, "prod's promotion")
    assert opened[0]["kind"] == "open" and opened[0]["digest"] == d


def test_with_the_ingress_down_the_reconcile_pass_finds_the_merge(flow: Flow) -> None:
    env = flow.env
    d = digest_of("merged-while-down")
    pr = to_staging_pr(flow, d)
    # pr-writer stops too: it reports a merge it happens to see, and here only the pass may
    [writer] = [p for p in env.procs if "pr-writer" in str(getattr(p, "log_path", ""))]
    env.kill(writer, signal.SIGTERM)
    flow.merge_by_hand(pr.number)  # no ingress runs: no webhook reaches Ferry
    assert env.changes("pr_merged")[1:] == []
    flow.start_ingress()  # the pass at start finds it
    [merged] = wait_until(lambda: env.changes("pr_merged")[1:], 20, "the reconciled merge")
    assert merged["env"] == "staging" and "reconcile" in merged["reason"]
    wait_until(lambda: promotions(env, "prod"), 10, "prod's promotion")
    # a second replica's pass (or the next period) publishes nothing more
    flow.start_ingress()
    assert len(env.changes("pr_merged")) == 2


def explain_prod(capsys: Any) -> dict[str, Any]:
    code, out, err = run_cli(capsys, "explain", "api", "prod", "--json")
    assert code == 0, err
    return json.loads(out)


def approval(capsys: Any) -> dict[str, Any]:
    return {g["gate"]: g for g in explain_prod(capsys)["gates"]}["approval"]


def test_via_forge_only_reviews_on_the_promotion_pr_approve(
    flow: Flow, capsys: pytest.CaptureFixture[str]
) -> None:
    env = flow.env
    flow.start_ingress()
    d = digest_of("reviewed")
    pr = to_staging_pr(flow, d)
    flow.merge_by_hand(pr.number)
    flow.hooks.pull_request(pr.number, "closed", sender="carol")
    prod = wait_until(lambda: flow.pr("Promote api to prod"), 20, "the prod PR (opened early)")

    # `ferry approve` by an approver does not count: the policy takes reviews only
    code, _, err = run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "release-lead")
    assert code == 0, err
    wait_until(lambda: "release-lead via cli" in approval(capsys)["reason"], 10, "cli not counted")
    assert approval(capsys)["status"] == "waiting"

    # an approving review given on an older head of the PR does not count
    flow.fake.add_review(prod.number, "release-lead", "approved")
    with flow.fake.lock:
        prod.reviews[-1]["sha"] = flow.fake.branch_sha("main")  # what the reviewer saw before
    assert (
        flow.hooks.review(prod.number, sender="release-lead", state="approved").status_code == 202
    )
    wait_until(
        lambda: any(
            "older head" in a["reason"] for a in env.entries("audit") if a["action"] == "review"
        ),
        10,
        "the outdated review to be read",
    )
    assert approval(capsys)["status"] == "waiting"
    assert env.repo.pinned("api", "prod") is None

    # a review by someone who is not an approver does not count either
    flow.fake.add_review(prod.number, "mallory", "approved")
    flow.hooks.review(prod.number, sender="mallory", state="approved")
    wait_until(lambda: "mallory" in approval(capsys)["reason"], 10, "mallory's review")
    assert approval(capsys)["status"] == "waiting"

    # the approver's review on the current head moves the digest
    flow.fake.add_review(prod.number, "release-lead", "approved")
    assert (
        flow.hooks.review(prod.number, sender="release-lead", state="approved").status_code == 202
    )
    env.wait_pinned("api", "prod", d, timeout=15)
    merged = wait_until(
        lambda: [c for c in env.changes("pr_merged") if c["env"] == "prod"], 10, "prod merged"
    )
    assert merged[0]["digest"] == d
    assert "release-lead via forge" in approval(capsys)["reason"]


def test_two_ingress_replicas_publish_a_retried_delivery_once(flow: Flow) -> None:
    env = flow.env
    flow.start_ingress()
    first = flow.url
    flow.start_ingress()
    second = flow.url
    web = FakeForge(env.root / "web", "github", name="web").start()
    try:
        app_pr(web, 4, ["preview"])
        hooks = Hooks(web, f"{first}/webhooks/github", SECRET)
        assert hooks.pull_request(4, "opened", sender="dev").json()["published"] == 1
        _, raw, headers = hooks.sent[-1]
        again = httpx.post(f"{second}/webhooks/github", content=raw, headers=headers, timeout=10)
        assert again.status_code == 202 and again.json()["duplicates"] == 1
        assert len(env.entries("previews")) == 1
    finally:
        web.stop()
