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
    "read_pulls",
    "resolve_repo",
]
