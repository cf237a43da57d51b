"""The whole flow on each HTTP forge, against the fake forge: build -> dev -> staging -> gated
prod by merged pull requests, `ferry pr` on the provider, and the token nowhere it must not be."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ferry.adapters.gitops import GitOpsRepo
from tests.e2e.test_prod_gates import load_test_passed, with_prod_policy
from tests.forgefake import FakeForge
from tests.forgefake.setup import start_fake, use_fake
from tests.helpers import Cluster, digest_of, run_cli, wait_until


def on_fake(env: Cluster, monkeypatch: pytest.MonkeyPatch, flavour: str) -> FakeForge:
    """Move the cluster's GitOps repository onto a fake forge of FLAVOUR: workers and the CLI
    talk to it over HTTP; the test reads main straight from the forge's bare repository."""
    fake = start_fake(env.root, flavour, env.repo_path)
    use_fake(monkeypatch, fake)
    env._repo = GitOpsRepo(remote=str(fake.repo), workdir=env.root / "fake-reader")
    return fake


def secrets_found(token: str, env: Cluster) -> list[str]:
    """Every place under the cluster's root (logs, clones, their .git/config) and in its streams
    (audit, dead letters, changes) where TOKEN appears."""
    found = [
        str(path)
        for path in Path(env.root).rglob("*")
        if path.is_file() and token.encode() in path.read_bytes()
    ]
    for stream in ("audit", "dlq", "changes", "promotions"):
        if any(token in json.dumps(e) for e in env.entries(stream)):
            found.append(f"stream {stream}")
    return found


@pytest.mark.parametrize("flavour", ["github", "gitea", "gitlab"])
def test_build_to_gated_prod_on_each_forge(
    env: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flavour: str
) -> None:
    env.init_repo(["api"])
    with_prod_policy(env, auto_merge=True)
    fake = on_fake(env, monkeypatch, flavour)
    try:
        env.start("gate-evaluator", **fake.settings_env())
        env.start("pr-writer", **fake.settings_env())
        d = digest_of(f"api-{flavour}")
        env.build("api", d, author="alice")
        env.wait_pinned("api", "dev", d)
        env.build("api", d, env="dev", check="integration")
        env.wait_pinned("api", "staging", d)
        assert load_test_passed(capsys, d) == 0
        assert run_cli(capsys, "approve", "api", d, "--env", "prod", "--as", "release-lead")[0] == 0
        env.wait_pinned("api", "prod", d, timeout=40)

        prs = {p.title.split(":")[0]: p for p in fake_prs(fake)}
        assert set(prs) == {"Promote api to dev", "Promote api to staging", "Promote api to prod"}
        assert all(p.merged for p in prs.values())
        assert {"ferry", "env/prod"} <= set(prs["Promote api to prod"].labels)
        # a second build reaches staging, and is rolled back there
        d2 = digest_of(f"api-{flavour}-2")
        env.build("api", d2, author="alice")
        env.wait_pinned("api", "dev", d2)
        env.build("api", d2, env="dev", check="integration")
        env.wait_pinned("api", "staging", d2)
        code, _, err = run_cli(capsys, "rollback", "api", "staging", "--as", "alice")
        assert code == 0, err
        env.wait_pinned("api", "staging", d)
        [rollback] = [p for p in fake_prs(fake) if "rollback" in p.labels]
        assert rollback.merged
        message = fake_git_log(fake)
        assert f"Ferry-Rollback-Of: {d2}" in message and f"Ferry-Digest: {d}" in message

        # d2's prod PR opened early once d2 was live in staging; the rollback took d2 out of
        # staging, so that PR would never merge: it is closed.
        wait_until(
            lambda: (
                [
                    (p.state, p.merged)
                    for p in fake_prs(fake)
                    if p.title.startswith("Promote api to prod")
                ]
                == [("closed", True), ("closed", False)]
            ),
            10,
            "d2's prod PR to close",
        )

        # ferry pr ls|show through the provider
        code, out, _ = run_cli(capsys, "pr", "ls", "--json")
        assert code == 0
        listed = json.loads(out)
        assert sorted(p["state"] for p in listed) == ["closed"] + ["merged"] * 6
        assert [p["number"] for p in listed] == list(range(7, 0, -1))
        code, out, _ = run_cli(capsys, "pr", "show", str(rollback.number))
        assert code == 0 and "state: merged" in out and "rollback" in out
        assert secrets_found(fake.token, env) == []
    finally:
        env.stop_all()
        fake.stop()


def fake_prs(fake: FakeForge) -> list:  # noqa: ANN001
    with fake.lock:
        return list(fake.pulls.values())


def fake_git_log(fake: FakeForge) -> str:
    """The message of the last commit on the forge's main."""
    return subprocess.run(
        ["git", f"--git-dir={fake.repo}", "log", "-1", "--format=%B", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
