"""`ferry init`: the scaffolded GitOps repository works with ferry from the first minute."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from ferry.adapters.git import git
from ferry.adapters.gitops import GitOpsRepo
from ferry.adapters.scaffold import ScaffoldError, parse_services, scaffold
from ferry.core.policy import load_policy
from ferry.core.values import read_value

DIGEST = "sha256:" + "ab" * 32


def test_scaffold_default(tmp_path: Path) -> None:
    target = tmp_path / "gitops"
    scaffold(target, None)

    assert git("branch", "--show-current", cwd=target) == "main"
    assert git("log", "--format=%s", cwd=target) == "ferry init: scaffold GitOps repository"
    assert git("status", "--porcelain", cwd=target) == ""
    assert git("config", "receive.denyCurrentBranch", cwd=target) == "updateInstead"

    policy = load_policy((target / "ferry.yaml").read_text())
    assert policy.env_names() == ["dev", "staging", "prod"]
    dev, staging, prod = (policy.environment(e) for e in policy.env_names())
    assert dev.promote_from == "build" and dev.auto_merge
    assert staging.promote_from == "dev" and staging.auto_merge
    assert staging.gates.ci is not None and staging.gates.ci.checks == []
    assert prod.promote_from == "staging" and prod.strategy == "canary" and not prod.auto_merge
    assert prod.gates.approval is not None and prod.gates.approval.min_approvals == 1
    assert prod.gates.soak is not None and len(prod.gates.windows) == 2
    assert policy.approvers.teams["sre"] and policy.previews.label == "preview"
    assert "# " in (target / "ferry.yaml").read_text()  # it is explained

    replicas = {"dev": 1, "staging": 2, "prod": 3}
    for env in policy.env_names():
        for service in ("api", "web"):
            text = (target / policy.values_path(env, service)).read_text()
            assert read_value(text, "image.digest") == ""
            assert read_value(text, "image.repository") == f"registry.example.com/shop/{service}"
            assert YAML(typ="safe").load(text)["replicas"] == replicas[env]
            assert text.startswith("#")

    appset = YAML(typ="safe").load((target / "argocd/applicationset.yaml").read_text())
    assert appset["apiVersion"] == "argoproj.io/v1alpha1"
    assert appset["kind"] == "ApplicationSet"
    matrix = appset["spec"]["generators"][0]["matrix"]["generators"]
    assert [e["service"] for e in matrix[0]["list"]["elements"]] == ["api", "web"]
    assert [e["env"] for e in matrix[1]["list"]["elements"]] == ["dev", "staging", "prod"]
    sources = appset["spec"]["template"]["spec"]["sources"]
    assert sources[0]["helm"]["valueFiles"] == ["$values/envs/{{.env}}/{{.service}}/values.yaml"]
    assert "image.digest" in (target / "README.md").read_text()


def test_scaffold_custom_services_envs_registry(tmp_path: Path) -> None:
    target = tmp_path / "g"
    target.mkdir()  # an existing empty directory is fine
    scaffold(target, ["payments"], envs=("dev", "qa", "perf", "live"), registry="ghcr.io/acme/")
    policy = load_policy((target / "ferry.yaml").read_text())
    assert policy.env_names() == ["dev", "qa", "perf", "live"]
    assert [policy.environment(e).promote_from for e in policy.env_names()] == [
        "build",
        "dev",
        "qa",
        "perf",
    ]
    text = (target / "envs/live/payments/values.yaml").read_text()
    assert read_value(text, "image.repository") == "ghcr.io/acme/payments"


def test_parse_services() -> None:
    assert parse_services(None) == ["api", "web"]
    assert parse_services("") == ["api", "web"]
    assert parse_services("a, b,c") == ["a", "b", "c"]


def test_refuses_non_empty_target(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(ScaffoldError, match="already exists and is not empty"):
        scaffold(tmp_path / "x", ["api"])
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
    (tmp_path / "f").write_text("file")
    with pytest.raises(ScaffoldError):
        scaffold(tmp_path / "f", ["api"])


@pytest.mark.parametrize("bad", ["../etc", "API", "a_b", "", "-x"])
def test_refuses_bad_service_names(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ScaffoldError) as info:
        scaffold(tmp_path / "g", ["api", bad])
    assert "service name must be a DNS label" in str(info.value)
    assert repr(bad) in str(info.value)
    assert not (tmp_path / "g").exists()


def test_refuses_other_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="listed twice"):
        scaffold(tmp_path / "g", ["api", "api"])
    with pytest.raises(ScaffoldError, match="at least one service"):
        scaffold(tmp_path / "g", [])
    with pytest.raises(ScaffoldError, match="environment name"):
        scaffold(tmp_path / "g", ["api"], envs=("dev", "Prod"))
    with pytest.raises(ScaffoldError, match="registry"):
        scaffold(tmp_path / "g", ["api"], registry="https://Registry")


def test_promotion_into_a_scaffolded_repo(tmp_path: Path) -> None:
    target = tmp_path / "gitops"
    scaffold(target, ["api", "web"])
    repo = GitOpsRepo(str(target), tmp_path / "work")
    assert repo.services() == ["api", "web"]
    assert repo.pinned("api", "dev") is None
    assert repo.repository("api", "dev") == "registry.example.com/shop/api"

    sha = repo.prepare_promotion(
        branch="ferry/api/dev",
        service="api",
        env="dev",
        digest=DIGEST,
        message="Promote api to dev",
    )
    assert sha is not None
    before = (target / "envs/dev/api/values.yaml").read_text()
    assert git("diff", "--numstat", "main", sha, cwd=target) == "1\t1\tenvs/dev/api/values.yaml"

    # Merging = pushing the branch's commit to main; updateInstead updates the checkout.
    git("push", "-q", ".", f"{sha}:refs/heads/main", cwd=target)
    after = (target / "envs/dev/api/values.yaml").read_text()
    assert after == before.replace('digest: ""', f'digest: "{DIGEST}"')
    assert git("status", "--porcelain", cwd=target) == ""
    assert repo.pinned("api", "dev") == DIGEST
    assert (
        repo.prepare_promotion(
            branch="ferry/api/dev", service="api", env="dev", digest=DIGEST, message="again"
        )
        is None
    )
