"""Forges: where ferry opens, merges and closes pull requests."""

from ferry.adapters.forge.base import (
    Comment,
    Forge,
    ForgeError,
    MergeConflict,
    PermanentForgeError,
    PRState,
    PullRequest,
    PullRequestNotFound,
    StatusState,
    TransientForgeError,
)
from ferry.adapters.forge.local import LocalForge, read_pulls, resolve_repo


def budget_wait(forge: object) -> float:
    """Seconds until FORGE's shared request budget allows a content-creating request (0: now, or
    a forge without a budget, like the local one)."""
    budget = getattr(forge, "budget", None)
    if budget is None:
        return 0.0
    return max(budget.wait_s(write=True), budget.wait_s(write=False))


__all__ = [
    "Comment",
    "Forge",
    "ForgeError",
    "LocalForge",
    "MergeConflict",
    "PRState",
    "PermanentForgeError",
    "PullRequest",
    "PullRequestNotFound",
    "StatusState",
    "TransientForgeError",
    "budget_wait",
    "read_pulls",
    "resolve_repo",
]
