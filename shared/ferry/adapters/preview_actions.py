"""What preview-reaper does to an application pull request: remove a label, post a comment.

`PreviewActions` is the small interface the reaper needs. With the local forge the application
PRs are not on disk, so `LocalPreviewActions` records each action on the preview's record (shown by
`ferry previews ls`); `ForgePreviewActions` acts on the PR through the HTTP forge provider
(GitHub, GitLab, Gitea) of the PR's own repository, sharing the fleet's request budget.

Both are safe to call again: removing an absent label is not an error, and a comment whose exact
text is already among the PR's latest comments is not posted twice (a replica that died after
posting and before recording it leaves exactly that behind).
"""

from __future__ import annotations

from typing import Any, Protocol

from ferry.adapters.preview_store import PreviewStore
from ferry.runtime.settings import Settings

# How many of a PR's latest comments are searched for the one about to be posted.
RECENT_COMMENTS = 10


class PreviewActions(Protocol):
    """The two things preview-reaper does on an application PR."""

    def remove_label(self, repo: str, pr: int, label: str) -> None: ...

    def comment(self, repo: str, pr: int, body: str) -> None: ...


class LocalPreviewActions:
    """The local forge: application PRs live elsewhere, so record what would be done on them.
    In dry-run mode every forge does this, marked as not done."""

    def __init__(self, store: PreviewStore, *, dry_run: bool = False) -> None:
        self.store = store
        self.dry_run = dry_run

    def remove_label(self, repo: str, pr: int, label: str) -> None:
        self.store.log_action(
            repo, pr, {"action": "remove_label", "label": label, "dry_run": self.dry_run}
        )

    def comment(self, repo: str, pr: int, body: str) -> None:
        recent = self.store.action_log(f"{repo}#{pr}")[-RECENT_COMMENTS:]
        if any(entry.get("body") == body for entry in recent):
            return
        self.store.log_action(
            repo, pr, {"action": "comment", "body": body, "dry_run": self.dry_run}
        )


class ForgePreviewActions:
    """Label removal and comments on application PRs of the HTTP forge FERRY_FORGE names.

    Each call is one try (the reaper retries later, with its own backoff, while it holds the
    preview's lease), bounded by TIMEOUT_S."""

    def __init__(self, settings: Settings, redis_client: Any, *, timeout_s: float) -> None:
        self.settings = settings.model_copy(
            update={"forge_attempts": 1, "forge_timeout_s": timeout_s}
        )
        self.redis = redis_client
        self._forges: dict[str, Any] = {}

    def _forge(self, repo: str) -> Any:
        if repo not in self._forges:
            from ferry.adapters.forge.providers import http_forge
            from ferry.runtime.resources import forge_url

            self._forges[repo] = http_forge(
                self.settings, self.redis, repo=repo, api_url=forge_url(self.settings)
            )
        return self._forges[repo]

    def remove_label(self, repo: str, pr: int, label: str) -> None:
        self._forge(repo).remove_label(pr, label)

    def comment(self, repo: str, pr: int, body: str) -> None:
        forge = self._forge(repo)
        if any(c.body == body for c in forge.get_pr(pr).comments[-RECENT_COMMENTS:]):
            return
        forge.comment(pr, body)

    def close(self) -> None:
        for forge in self._forges.values():
            forge.close()
