"""`ferry manifest ENV`: the platform version is a content hash of the sorted service=digest
pairs pinned on main."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ferry.adapters.git import git
from tests.helpers import Cluster, digest_of, pin_digest, run_cli


def pin(env: Cluster, service: str, digest: str) -> None:
    env.commit_by_hand(f"pin {service}", lambda clone: pin_digest(clone, "prod", service, digest))


def test_manifest_names_the_set_of_digests_by_its_content(env: Cluster, capsys) -> None:  # noqa: ANN001
    env.init_repo(["web", "api", "db"])
    a, w = digest_of("a"), digest_of("w")
    pin(env, "web", w)
    pin(env, "api", a)
    code, out, _ = run_cli(capsys, "manifest", "prod", "--json")
    assert code == 0
    found = json.loads(out)
    assert found["services"] == {"api": a, "web": w}  # db has nothing pinned
    expected = hashlib.sha256(f"api={a}\nweb={w}\n".encode()).hexdigest()
    assert found["version"] == f"sha256:{expected}"
    assert found["commit"] == git("rev-parse", "main", cwd=env.repo_path)

    code, out, _ = run_cli(capsys, "manifest", "prod")
    assert code == 0 and out.splitlines()[0].startswith(f"prod sha256:{expected}")
    assert f"  api={a}" in out

    pin(env, "api", digest_of("a2"))  # any change of a digest is a new version
    assert (
        json.loads(run_cli(capsys, "manifest", "prod", "--json")[1])["version"]
        != (found["version"])
    )
    assert json.loads(run_cli(capsys, "manifest", "dev", "--json")[1])["services"] == {}


def test_manifest_of_an_unknown_environment_is_one_line(env: Cluster, capsys) -> None:  # noqa: ANN001
    env.init_repo(["api"])
    code, _, err = run_cli(capsys, "manifest", "qa")
    assert code == 2 and err.strip().splitlines() == [
        "error: unknown environment 'qa': ferry.yaml defines dev, staging, prod"
    ]


def test_status_and_manifest_work_while_ferry_yaml_is_broken(env: Cluster, capsys) -> None:  # noqa: ANN001
    env.init_repo(["api"])
    a = digest_of("before-the-typo")
    pin(env, "api", a)

    def break_it(clone: Path) -> None:
        (clone / "ferry.yaml").write_text("environments: [this is: not a mapping\n")

    env.commit_by_hand("a broken policy", break_it)
    code, out, err = run_cli(capsys, "manifest", "prod", "--json")
    assert code == 0, err
    assert json.loads(out)["services"] == {"api": a}  # the last valid policy says where to look
    code, out, err = run_cli(capsys, "status", "--json")
    assert code == 0, err
    assert json.loads(out)["services"]["api"]["prod"] == a
