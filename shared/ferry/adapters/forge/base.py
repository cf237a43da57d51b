"""Provider-independent pull-request models, errors and the `Forge` protocol.

Every provider (local, github, gitlab, gitea) returns these models and raises these errors, so the
workers never see a provider's own types.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

PRState = Literal["open", "merged", "closed"]
StatusState = Literal["pending", "success", "failure"]
ReviewState = Literal["approved", "changes_requested", "commented"]
MergeMethod = Literal["merge", "squash", "rebase"]

PR_STATES: tuple[str, ...] = ("open", "merged", "closed")
STATUS_STATES: tuple[str, ...] = ("pending", "success", "failure")


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


class Comment(BaseModel):
    author: str
    body: str
    at: datetime


class PullRequest(BaseModel):
    number: int
    title: str
    body: str
    head: str
    base: str = "main"
    state: PRState = "open"
    labels: list[str] = Field(default_factory=list)
    comments: list[Comment] = Field(default_factory=list)
    statuses: dict[str, StatusState] = Field(default_factory=dict)
    # context -> the description given with its latest status (e.g. the unmet gates)
    status_descriptions: dict[str, str] = Field(default_factory=dict)
    key: str | None = None
    head_sha: str
    merge_commit: str | None = None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    merged_at: datetime | None = None
    url: str


class Review(BaseModel):
    """A person's review of a PR, as every forge reports it: their word and the head it saw."""

    author: str
    state: ReviewState
    at: datetime | None = None
    commit: str | None = None
    body: str = ""


class ForgeError(RuntimeError):
    """Base of every forge error. Unless it is a `PermanentForgeError`, retrying may help."""


class TransientForgeError(ForgeError):
    """A failure worth retrying later (a busy lock, a lost race, 5xx, 429, a timeout)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentForgeError(ForgeError):
    """Retrying cannot help (a missing branch, a PR in the wrong state, bad credentials)."""


class PullRequestNotFound(PermanentForgeError):
    """No pull request has this number."""


class MergeConflict(PermanentForgeError):
    """The head branch does not merge cleanly into the base branch."""


class HeadMoved(PermanentForgeError):
    """The PR's head is no longer the commit that was evaluated: it was not merged."""


@runtime_checkable
class Forge(Protocol):
    """What ferry needs from a forge. All methods are synchronous and safe to call again."""

    def open_pr(
        self,
        *,
        head: str,
        title: str,
        body: str,
        base: str = "main",
        labels: Sequence[str] = (),
        key: str | None = None,
    ) -> PullRequest:
        """Open a PR from HEAD into BASE. With KEY, a PR already opened with that key (in any
        state) is returned unchanged instead: one key never yields two PRs."""
        ...

    def find_pr(self, key: str) -> PullRequest | None:
        """The PR opened with KEY, or None."""
        ...

    def get_pr(self, number: int) -> PullRequest:
        """The PR NUMBER; raises PullRequestNotFound."""
        ...

    def list_prs(self, state: str | None = None) -> list[PullRequest]:
        """PRs (all, or those in STATE), newest first."""
        ...

    def merge_pr(
        self, number: int, *, message: str | None = None, sha: str | None = None
    ) -> PullRequest:
        """Merge the PR. A merged PR is returned as it is; a closed one raises ForgeError;
        a conflict raises MergeConflict. With SHA, merge only if the head is still that commit
        (the one that was evaluated): a head that moved raises HeadMoved."""
        ...

    def close_pr(self, number: int, *, comment: str | None = None) -> PullRequest:
        """Close the PR without merging, after adding COMMENT if given."""
        ...

    def comment(self, number: int, body: str, *, author: str = "ferry") -> PullRequest:
        """Add a comment."""
        ...

    def update_body(self, number: int, body: str) -> PullRequest:
        """Replace the PR's description (unchanged text: no write)."""
        ...

    def add_labels(self, number: int, labels: Iterable[str]) -> PullRequest:
        """Add labels (those present already are kept once)."""
        ...

    def remove_label(self, number: int, label: str) -> PullRequest:
        """Remove a label (removing an absent label is not an error)."""
        ...

    def set_status(
        self, number: int, context: str, state: str, description: str = ""
    ) -> PullRequest:
        """Set the commit status CONTEXT to STATE (pending, success or failure)."""
        ...

    def reviews(self, number: int) -> list[Review]:
        """The reviews people left on the PR, oldest first."""
        ...
