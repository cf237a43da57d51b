"""Forge faults against pr-writer replicas on the fake GitHub: transient failures and rate limits
retried (never before Retry-After, never duplicating a PR), permanent refusals failing one
promotion visibly, the shared budget, and the token kept out of every error."""

from __future__ import annotations

import json
import os
import time

import pytest

from ferry.adapters.forge.base import PermanentForgeError
from ferry.adapters.git import GitError, git
from ferry.adapters.gitops import GitOpsRepo
from ferry.core.events import PromotionCommand
from ferry.runtime.resources import forge as build_forge
from tests.e2e.test_forge_providers import on_fake, secrets_found
from tests.forgefake import FakeForge
from tests.forgefake.setup import fake_settings
from tests.helpers import Cluster, digest_of, open_in_dev, pin_digest, run_cli, wait_until

pytestmark = pytest.mark.slow

# A reclaim threshold near production's, not the suite's 1 s: on a busy machine a promotion over
# an HTTP forge takes seconds, and a live replica's entry must not be taken from it meanwhile
# (which would send the same promotion to the forge twice at once, and spend a fault twice).
PATIENT = {"FERRY_CLAIM_IDLE_MS": "20000", "FERRY_LOCK_TTL_MS": "15000"}


def promote(env: Cluster, service: str, tag: str = "1") -> PromotionCommand:
    """Ask pr-writer directly for an auto-merged promotion of SERVICE to dev."""
    digest = digest_of(f"{service}-{tag}")
    cmd = open_in_dev(service, digest)
    env.bus.publish(cmd)
    return cmd


def merged_ids(env: Cluster) -> set[str]:
    return {c["promotion_id"] for c in env.changes("pr_merged")}


@pytest.mark.timeout(1500)
def test_transient_faults_every_promotion_completes_once_and_retry_after_is_honoured(
    env: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = int(os.environ.get("FERRY_TEST_PROMOTIONS", "200"))
    services = [f"s{i:03d}" for i in range(count)]
    env.init_repo(services)
    fake = on_fake(env, monkeypatch, "github")
    try:
        # 30% of API calls fail: 5xx, or a 502 after the write was done
        fake.transient_rate = 0.3
        fake.transient_kinds = ["500", "502", "503", "after"]
        # ... plus rate limits whose Retry-After must hold every replica, and timeouts after the
        # write took effect (the PR is opened, the merge is made: the retry must find them)
        for _ in range(3):
            fake.fail(429, headers={"Retry-After": "3"}, body="Too Many Requests")
            fake.fail(
                403,
                headers={"retry-after": "3"},
                body="You have exceeded a secondary rate limit.",
            )
        fake.fail(201, method="POST", path=r"/pulls$", after=True, delay=2.5, times=2)
        fake.fail(200, method="PUT", path=r"/merge$", after=True, delay=2.5, times=2)
        extra = {
            **fake.settings_env(),
            "FERRY_FORGE_TIMEOUT_S": "2",
            "FERRY_FORGE_BACKOFF_S": "0.05",
            # GitHub's 80 writes a minute would make this a test of the budget (that is below)
            "FERRY_FORGE_WRITES_PER_MINUTE": "0",
            "FERRY_FORGE_WRITES_PER_HOUR": "0",
            **PATIENT,
        }
        for _ in range(3):
            env.start("pr-writer", **extra)
        commands = [promote(env, s) for s in services]
        wait_until(lambda: len(merged_ids(env)) == count, 1200, f"{count} promotions merged")

        assert merged_ids(env) == {c.promotion_id for c in commands}
        with fake.lock:
            heads = [p.head for p in fake.pulls.values()]
            assert all(p.merged for p in fake.pulls.values())
        assert len(heads) == count == len(set(heads))  # no PR duplicated
        assert fake.violations == []  # nothing was sent before a Retry-After allowed it
        failed = [r for r in fake.requests if r["api"] and r["status"] >= 400]
        assert len(failed) > count  # the faults did happen
        assert env.dead_letters() == []
        for s in services[:: count // 10]:
            assert env.repo.pinned(s, "dev") == digest_of(f"{s}-1")
    finally:
        env.stop_all()
        fake.stop()


def test_a_refusal_fails_one_promotion_visibly_and_the_others_go_on(
    env: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.init_repo(["api", "web", "db"])
    fake = on_fake(env, monkeypatch, "github")
    try:
        # the token may not open pull requests (once), then main's protection refuses a merge
        fake.fail(
            403, method="POST", path=r"/pulls$", body="Resource not accessible by integration"
        )
        fake.fail(
            405,
            method="PUT",
            path=r"/merge$",
            body="At least 1 approving review is required by reviewers with write access.",
        )
        env.start("pr-writer", **fake.settings_env(), **PATIENT)
        refused, protected, fine = promote(env, "api"), promote(env, "web"), promote(env, "db")
        wait_until(lambda: fine.promotion_id in merged_ids(env), 30, "the third promotion merged")
        # (sets: under load an entry may be reclaimed and refused twice; each refusal is reported)
        both = {refused.promotion_id, protected.promotion_id}

        def failed() -> dict[str, str]:
            return {c["promotion_id"]: c["reason"] for c in env.changes("promotion_failed")}

        reasons = wait_until(lambda: set(failed()) == both and failed(), 10, "promotion_failed")
        assert "give the token write access" in reasons[refused.promotion_id]
        assert "approving review is required" in reasons[protected.promotion_id]

        def dead_services() -> set[str]:
            return {json.loads(x["payload"])["service"] for x in env.dead_letters()}

        wait_until(lambda: dead_services() == {"api", "web"}, 10, "two dead letters")
        audits = [a for a in env.entries("audit") if a["outcome"] == "failed"]
        assert {a["subject"].split("@")[0] for a in audits} == {"api", "web"}
        assert env.repo.pinned("db", "dev") == fine.digest

        # the cause fixed (the faults were one-offs), `ferry dlq retry` re-drives both
        assert run_cli(capsys, "dlq", "retry", "--all")[0] == 0
        wait_until(lambda: {refused.promotion_id, protected.promotion_id} <= merged_ids(env), 30)
        with fake.lock:
            assert len(fake.pulls) == 3  # the re-driven promotion reused its PR
        assert secrets_found(fake.token, env) == []
    finally:
        env.stop_all()
        fake.stop()


def test_three_replicas_share_one_write_budget_and_explain_says_so(
    env: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    services = ["a", "b", "c", "d", "e"]
    env.init_repo(services)
    fake = on_fake(env, monkeypatch, "github")
    limit = 5
    monkeypatch.setenv("FERRY_FORGE_WRITES_PER_MINUTE", str(limit))
    try:
        extra = {
            **fake.settings_env(),
            "FERRY_FORGE_WRITES_PER_MINUTE": str(limit),
            "FERRY_FORGE_BUDGET_WAIT_S": "1",
        }
        env.start("gate-evaluator", **fake.settings_env())
        for _ in range(3):
            env.start("pr-writer", **extra)
        start = time.time()
        for s in services:
            env.build(s, digest_of(f"{s}-1"))
        wait_until(lambda: len(fake.writes()) >= limit, 60, "the budget to be spent")
        code, out, _ = run_cli(capsys, "explain", "e", "dev")
        waiting = [s for s in services if env.repo.pinned(s, "dev") is None]
        time.sleep(3)  # replicas keep asking: none may write
        writes = fake.writes()
        assert time.time() - start < 60  # still inside the first minute ...
        assert len(writes) == limit  # ... so all replicas together wrote LIMIT times, no more
        assert waiting  # 5 promotions need 15 writes: some wait
        code, out, _ = run_cli(capsys, "explain", waiting[0], "dev")
        assert code == 0
        assert "waiting: forge budget, next request allowed in" in out
    finally:
        env.stop_all()
        fake.stop()


def test_the_token_is_in_no_error(tmp_path, redis_url: str, prefix: str, monkeypatch) -> None:  # noqa: ANN001
    from ferry.adapters.scaffold import scaffold

    scaffold(tmp_path / "gitops", ["api"])
    fake = FakeForge(tmp_path / "forge", "github").start()
    try:
        fake.seed(tmp_path / "gitops")
        wrong = "wrong-token-abcdef0123456789"
        monkeypatch.setenv("FERRY_FORGE_TOKEN", wrong)
        with pytest.raises(GitError) as git_error:
            git("clone", "-q", fake.clone_url, str(tmp_path / "clone"))
        assert wrong not in str(git_error.value) and fake.token not in str(git_error.value)
        settings = fake_settings(fake, redis_url=redis_url, prefix=prefix, home=tmp_path / "h")
        settings.forge_token = type(settings.forge_token)(wrong)  # type: ignore[misc,call-arg]
        with pytest.raises(PermanentForgeError) as api_error:
            build_forge(settings).get_pr(1)
        assert "FERRY_FORGE_TOKEN" in str(api_error.value) and wrong not in str(api_error.value)
        # with the right token, a clone works and its .git/config holds no credential
        monkeypatch.setenv("FERRY_FORGE_TOKEN", fake.token)
        repo = GitOpsRepo(remote=fake.clone_url, workdir=tmp_path / "work")
        assert repo.pinned("api", "dev") is None
        config = (tmp_path / "work" / ".git" / "config").read_text()
        assert fake.token not in config and fake.clone_url in config
    finally:
        fake.stop()


def test_main_moving_between_push_and_merge_is_redone_on_the_same_pr(
    env: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.init_repo(["api"])
    fake = on_fake(env, monkeypatch, "github")
    person = env.root / "person-on-forge"
    git("clone", "-q", str(fake.repo), str(person))
    other = digest_of("someone-else")

    def someone_pins_api_first(_pr: object) -> None:
        # a person's push to main lands after Ferry pushed its branch, before it merges: the
        # same line changes, so Ferry's branch no longer merges cleanly
        pin_digest(person, "dev", "api", other)
        git("commit", "-qam", "pin api by hand", cwd=person)
        git("push", "-q", "origin", "main", cwd=person)

    fake.before_merge.append(someone_pins_api_first)
    try:
        env.start("pr-writer", **fake.settings_env(), **PATIENT)
        cmd = promote(env, "api")
        wait_until(lambda: cmd.promotion_id in merged_ids(env), 30, "the promotion merged")
        assert env.repo.pinned("api", "dev") == cmd.digest
        with fake.lock:
            [pr] = fake.pulls.values()  # the branch was cut again and pushed: no second PR
            assert pr.merged
        history = git("log", "--format=%s", "main", cwd=fake.repo)
        assert "pin api by hand" in history
    finally:
        env.stop_all()
        fake.stop()
