"""The forge under test: each provider in turn (see test_forge_contract.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ferry.adapters.git import git
from ferry.adapters.scaffold import scaffold
from ferry.runtime.resources import forge as build_forge
from ferry.runtime.settings import Settings
from tests.forgefake import FakeForge
from tests.forgefake.setup import fake_settings, start_fake, use_fake

PROVIDERS = ["local", "github", "gitea", "gitlab"]


@dataclass
class Under:
    """A forge under test and a person's clone of its repository to push branches from."""

    forge: Any
    clone: Path
    fake: FakeForge | None

    def branch(
        self, name: str, text: str, path: str = "notes.txt", base: str = "origin/main"
    ) -> str:
        git("fetch", "-q", "origin", cwd=self.clone)
        git("checkout", "-q", "-B", name, base, cwd=self.clone)
        (self.clone / path).write_text(text)
        git("add", "-A", cwd=self.clone)
        git("commit", "-qm", f"change {path} on {name}", cwd=self.clone)
        git("push", "-q", "-f", "origin", f"{name}:refs/heads/{name}", cwd=self.clone)
        return git("rev-parse", "HEAD", cwd=self.clone)

    def open(self, head: str, key: str | None = None, **kw: Any) -> Any:
        return self.forge.open_pr(
            head=head, title=f"promote {head}", body="the body", key=key, **kw
        )


@pytest.fixture(params=PROVIDERS)
def under(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Under]:
    repo = tmp_path / "gitops"
    scaffold(repo, ["api"])
    if request.param == "local":
        settings = Settings(gitops_repo=str(repo), home=tmp_path / "home", redis_url=redis_url)
        clone = tmp_path / "person"
        git("clone", "-q", str(repo), str(clone))
        yield Under(build_forge(settings), clone, None)
        return
    fake = start_fake(tmp_path, request.param, repo)
    try:
        use_fake(monkeypatch, fake)
        settings = fake_settings(fake, redis_url=redis_url, prefix=prefix, home=tmp_path / "home")
        clone = tmp_path / "person"
        git("clone", "-q", fake.clone_url, str(clone))
        yield Under(build_forge(settings), clone, fake)
    finally:
        fake.stop()
