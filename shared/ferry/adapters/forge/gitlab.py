"""The GitLab provider: GitLab's REST API v4, merge requests of one project.

GitLab's words map onto Ferry's: a merge request's `iid` is the PR number, `source_branch` the
head, `description` the body, notes the comments, commit statuses carry a `name` (the context),
approvals are the reviews. Labels go with the create call and with `add_labels`/`remove_labels`
(GitLab creates a missing label), so an auto-merged promotion costs two content-creating
requests. `merge_status` is `unchecked` until GitLab has computed mergeability. Squash is a flag
of the merge call; whether a merge commit or a fast-forward lands is the project's setting, so
`rebase` is left to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote

from ferry.adapters.forge.base import Comment, PullRequest, Review
from ferry.adapters.forge.http import (
    HTTPForge,
    comment_of,
    newest_reusable,
    parse_time,
    split_key,
)

_STATES = {"opened": "open", "merged": "merged", "closed": "closed", "locked": "closed"}
_STATUS_IN = {
    "failed": "failure",
    "canceled": "failure",
    "running": "pending",
    "success": "success",
    "pending": "pending",
    "created": "pending",
}
_STATUS_OUT = {"failure": "failed", "pending": "pending", "success": "success"}


class GitLabForge(HTTPForge):
    """A project GROUP/NAME (any depth of groups) on GitLab."""

    provider = "gitlab"

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"PRIVATE-TOKEN": token}

    @property
    def _project(self) -> str:
        return f"/projects/{quote(self.repo, safe='')}"

    def _pr(self, data: dict[str, Any]) -> PullRequest:
        body, key = split_key(data.get("description"))
        state = _STATES.get(data["state"], "closed")
        created = parse_time(data["created_at"])
        assert created is not None
        return PullRequest(
            number=data["iid"],
            title=data["title"],
            body=body,
            head=data["source_branch"],
            base=data["target_branch"],
            state=state,  # type: ignore[arg-type]
            labels=list(data.get("labels") or []),
            key=key,
            head_sha=data.get("sha") or "",
            merge_commit=(data.get("merge_commit_sha") or data.get("squash_commit_sha"))
            if state == "merged"
            else None,
            created_at=created,
            updated_at=parse_time(data.get("updated_at")) or created,
            closed_at=parse_time(data.get("closed_at") or data.get("merged_at")),
            merged_at=parse_time(data.get("merged_at")),
            url=data["web_url"],
        )

    @staticmethod
    def _mergeable(data: dict[str, Any]) -> bool | None:
        status = data.get("merge_status")
        if status == "can_be_merged":
            return True
        if status == "cannot_be_merged":
            return False
        return None  # unchecked, checking: GitLab has not looked yet

    def _find_by_head(self, head: str, base: str) -> PullRequest | None:
        params = {"source_branch": head, "target_branch": base, "state": "all", "per_page": 100}
        return newest_reusable(
            (self._pr(d) for d in self.paginate(f"{self._project}/merge_requests", params)), head
        )

    def _create(
        self, head: str, base: str, title: str, body: str, labels: Sequence[str]
    ) -> PullRequest:
        payload = {
            "source_branch": head,
            "target_branch": base,
            "title": title,
            "description": body,
            "labels": ",".join(labels),
        }
        return self._pr(
            self.request("POST", f"{self._project}/merge_requests", json=payload).json()
        )

    def _get(self, number: int) -> tuple[PullRequest, bool | None]:
        data = self.request("GET", f"{self._project}/merge_requests/{number}").json()
        return self._pr(data), self._mergeable(data)

    def _list(self, state: str | None) -> Iterator[PullRequest]:
        api_state = {"open": "opened", "closed": "closed", "merged": "merged"}.get(
            state or "", "all"
        )
        params = {"state": api_state, "per_page": 100}
        for data in self.paginate(f"{self._project}/merge_requests", params):
            yield self._pr(data)

    def _merge(self, pr: PullRequest, method: str, sha: str, message: str | None) -> None:
        payload: dict[str, Any] = {"sha": sha, "squash": method == "squash"}
        if message:
            payload["squash_commit_message" if method == "squash" else "merge_commit_message"] = (
                message
            )
        self.request("PUT", f"{self._project}/merge_requests/{pr.number}/merge", json=payload)

    def _update(self, number: int, **fields: str) -> None:
        self.request("PUT", f"{self._project}/merge_requests/{number}", json=fields)

    def _close(self, number: int) -> None:
        self._update(number, state_event="close")

    def _patch_body(self, number: int, body: str) -> None:
        self._update(number, description=body)

    def _comments(self, number: int) -> list[Comment]:
        path = f"{self._project}/merge_requests/{number}/notes"
        notes = self.paginate(path, {"per_page": 100, "sort": "asc", "order_by": "created_at"})
        return [
            comment_of(n["author"]["username"], n["body"], n.get("created_at"))
            for n in notes
            if not n.get("system")
        ]

    def _comment(self, number: int, body: str) -> None:
        self.request("POST", f"{self._project}/merge_requests/{number}/notes", json={"body": body})

    def _add_labels(self, pr: PullRequest, labels: list[str]) -> None:
        self._update(pr.number, add_labels=",".join(labels))

    def _remove_label(self, pr: PullRequest, label: str) -> None:
        self._update(pr.number, remove_labels=label)

    def _statuses(self, sha: str) -> dict[str, tuple[str, str]]:
        path = f"{self._project}/repository/commits/{sha}/statuses"
        out: dict[str, tuple[str, str]] = {}
        for s in self.paginate(path, {"per_page": 100}):  # newest first: keep the first per name
            out.setdefault(
                s["name"], (_STATUS_IN.get(s["status"], "pending"), s.get("description") or "")
            )
        return out

    def _set_status(self, sha: str, context: str, state: str, description: str) -> None:
        self.request(
            "POST",
            f"{self._project}/statuses/{sha}",
            json={"state": _STATUS_OUT[state], "name": context, "description": description},
        )

    def _reviews(self, number: int) -> list[Review]:
        data = self.request("GET", f"{self._project}/merge_requests/{number}/approvals").json()
        return [
            Review(author=a["user"]["username"], state="approved")
            for a in data.get("approved_by") or []
        ]
