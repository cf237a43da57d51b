"""Build an HTTP forge provider from settings (FERRY_FORGE=github|gitlab|gitea)."""

from __future__ import annotations

from typing import Any

import redis

from ferry.adapters.forge.budget import DEFAULT_LIMITS, Budget, Limits
from ferry.adapters.forge.gitea import GiteaForge
from ferry.adapters.forge.github import GitHubForge
from ferry.adapters.forge.gitlab import GitLabForge
from ferry.adapters.forge.http import HTTPForge

PROVIDERS: dict[str, type[HTTPForge]] = {
    "github": GitHubForge,
    "gitea": GiteaForge,
    "gitlab": GitLabForge,
}


def limits(settings: Any) -> Limits:
    """The budget's limits: the settings where given, else the provider's documented ones."""
    default = DEFAULT_LIMITS[settings.forge]

    def pick(value: int | None, fallback: int) -> int:
        return fallback if value is None else value

    return Limits(
        writes_per_minute=pick(settings.forge_writes_per_minute, default.writes_per_minute),
        writes_per_hour=pick(settings.forge_writes_per_hour, default.writes_per_hour),
        requests_per_hour=pick(settings.forge_requests_per_hour, default.requests_per_hour),
    )


def http_forge(settings: Any, client: redis.Redis, *, repo: str, api_url: str) -> HTTPForge:
    """The provider for SETTINGS.forge on REPO at API_URL; its budget and key index in CLIENT."""
    token = settings.forge_token.get_secret_value()
    # One budget per forge host and token holder: replicas of every worker share it.
    prefix = settings.key("forge", settings.forge, api_url.split("://", 1)[-1]) + ":"
    budget = Budget(client, prefix, limits(settings), max_wait_s=settings.forge_budget_wait_s)
    return PROVIDERS[settings.forge](
        api_url=api_url,
        repo=repo,
        token=token,
        budget=budget,
        keys=client,
        key_prefix=prefix + repo + ":",
        merge_method=settings.forge_merge_method,
        timeout_s=settings.forge_timeout_s,
        attempts=settings.forge_attempts,
        backoff_s=settings.forge_backoff_s,
    )
