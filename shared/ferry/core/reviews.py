"""Reviews on a promotion pull request as people's words (`via="forge"`): the approval gate counts
them like `ferry approve`, and only them when the policy says `via: [forge]`.

Read as the forges show them: each reviewer's latest approving or change-requesting review
stands (a comment-only review changes nothing), a review given on an older head of the pull
request does not count (the reviewer saw other bytes), and a dismissed review is gone."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from ferry.core.evidence import Word


def review_words(
    reviews: Iterable[Any], head_sha: str, digest: str, env: str, pr: int
) -> tuple[tuple[Word, ...], tuple[str, ...]]:
    """The standing words of REVIEWS (objects with author, state, at, commit, body) on pull
    request PR whose head is HEAD_SHA, and a note for each review left out."""
    latest: dict[str, Any] = {}
    outdated: dict[str, Any] = {}
    for r in reviews:
        if r.state not in ("approved", "changes_requested") or not r.author:
            continue
        if r.commit and r.commit != head_sha:
            outdated[r.author] = r
            continue
        old = latest.get(r.author)
        if old is None or _when(r.at) >= _when(old.at):
            latest[r.author] = r
    words = []
    for author, r in sorted(latest.items()):
        if r.state == "approved":
            kind, reason = "approval", f"approved #{pr} on the forge"
        else:
            body = " ".join((r.body or "").split())[:200]
            kind, reason = (
                "rejection",
                f"changes requested on #{pr}" + (f": {body}" if body else ""),
            )
        words.append(Word(kind, author, digest, env, reason, r.at, via="forge"))  # type: ignore[arg-type]
    notes = tuple(
        f"{author}'s review is on an older head ({r.commit[:12]}): it does not count"
        for author, r in sorted(outdated.items())
        if author not in latest
    )
    return tuple(words), notes


def _when(at: datetime | None) -> float:
    return at.timestamp() if at is not None else float("-inf")
