"""Point Ferry at a fake forge: a seeded repository, the settings, and the provider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ferry.runtime.settings import Settings
from tests.forgefake.server import FakeForge


def start_fake(root: Path, flavour: str, seed_repo: Path) -> FakeForge:
    """A started fake forge of FLAVOUR whose repository holds SEED_REPO's main."""
    fake = FakeForge(root / f"forge-{flavour}", flavour).start()
    fake.seed(seed_repo)
    return fake


def use_fake(monkeypatch: pytest.MonkeyPatch, fake: FakeForge) -> None:
    """Set FERRY_FORGE* in this process's environment: git's credential helper reads the token
    from there, as it does in a worker."""
    for key, value in fake.settings_env().items():
        monkeypatch.setenv(key, value)


def fake_settings(
    fake: FakeForge, *, redis_url: str, prefix: str, home: Path, **kw: Any
) -> Settings:
    return Settings(
        redis_url=redis_url,
        stream_prefix=prefix,
        home=home,
        consumer="test",
        forge=fake.flavour,  # type: ignore[arg-type]
        forge_url=fake.api_url,
        gitops_repo=fake.clone_url,
        forge_token=fake.token,  # type: ignore[arg-type]
        forge_timeout_s=kw.pop("forge_timeout_s", 5.0),
        claim_idle_ms=1000,
        lock_ttl_ms=800,
        **kw,
    )
