"""The GitHub provider: GitHub's REST API v3 (github.com or GitHub Enterprise Server).

Quirks it follows, as GitHub documents them: the list filter `head=` takes `owner:branch`; a PR's
`mergeable` is computed in the background and is `null` at first; labels are set through the
issues API after the PR exists; merging an already merged PR answers 405; a secondary rate limit
answers 403 with `retry-after`.
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

_REVIEW_STATES = {
    "APPROVED": "approved",
    "CHANGES_REQUESTED": "changes_requested",
    "COMMENTED": "commented",
    # Gitea's names for the same words
    "REQUEST_CHANGES": "changes_requested",
    "COMMENT": "commented",
}


def _comment(c: dict[str, Any]) -> Comment:
    return comment_of(c["user"]["login"], c["body"], c.get("created_at"))


class GitHubForge(HTTPForge):
    """A repository OWNER/NAME on GitHub."""

    provider = "github"
    # How this API pages, and the names of the merge call's method, fields and verb.
    PAGE_PARAMS: dict[str, int] = {"per_page": 100}
    MERGE_VERB = "PUT"
    MERGE_FIELDS = ("merge_method", "sha", "commit_title", "commit_message")
    STATUS_FIELD = "state"  # the field of a commit status that holds its state

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    @property
    def _repo_path(self) -> str:
        return f"/repos/{self.repo}"

    @property
    def _owner(self) -> str:
        return self.repo.split("/", 1)[0]

    def _pr(self, data: dict[str, Any]) -> PullRequest:
        body, key = split_key(data.get("body"))
        merged = bool(data.get("merged") or data.get("merged_at"))
        created = parse_time(data["created_at"])
        assert created is not None
        return PullRequest(
            number=data["number"],
            title=data["title"],
            body=body,
            head=data["head"]["ref"],
            base=data["base"]["ref"],
            state="merged" if merged else "open" if data["state"] == "open" else "closed",
            labels=[label["name"] for label in data.get("labels") or []],
            key=key,
            head_sha=data["head"]["sha"],
            merge_commit=data.get("merge_commit_sha") if merged else None,
            created_at=created,
            updated_at=parse_time(data.get("updated_at")) or created,
            closed_at=parse_time(data.get("closed_at")),
            merged_at=parse_time(data.get("merged_at")),
            url=data["html_url"],
        )

    def _find_by_head(self, head: str, base: str) -> PullRequest | None:
        params = {"head": f"{self._owner}:{head}", "base": base, "state": "all", "per_page": 100}
        return newest_reusable(
            (self._pr(d) for d in self.paginate(f"{self._repo_path}/pulls", params)), head
        )

    def _create(
        self, head: str, base: str, title: str, body: str, labels: Sequence[str]
    ) -> PullRequest:
        resp = self.request(
            "POST",
            f"{self._repo_path}/pulls",
            json={"head": head, "base": base, "title": title, "body": body},
        )
        return self._pr(resp.json())  # labels: added by open_pr, through the issues API

    def _get(self, number: int) -> tuple[PullRequest, bool | None]:
        data = self.request("GET", f"{self._repo_path}/pulls/{number}").json()
        return self._pr(data), data.get("mergeable")

    def _list(self, state: str | None) -> Iterator[PullRequest]:
        api_state = {"open": "open", "closed": "closed", "merged": "closed"}.get(state or "", "all")
        params = {"state": api_state, **self.PAGE_PARAMS}
        for data in self.paginate(f"{self._repo_path}/pulls", params):
            pr = self._pr(data)
            if state in (None, "all") or pr.state == state:
                yield pr

    def _merge(self, pr: PullRequest, method: str, sha: str, message: str | None) -> None:
        method_field, sha_field, title_field, message_field = self.MERGE_FIELDS
        payload: dict[str, Any] = {method_field: method, sha_field: sha}
        if message:
            title, _, rest = message.partition("\n")
            payload[title_field] = title
            payload[message_field] = rest.strip("\n")
        self.request(self.MERGE_VERB, f"{self._repo_path}/pulls/{pr.number}/merge", json=payload)

    def _close(self, number: int) -> None:
        self.request("PATCH", f"{self._repo_path}/pulls/{number}", json={"state": "closed"})

    def _patch_body(self, number: int, body: str) -> None:
        self.request("PATCH", f"{self._repo_path}/pulls/{number}", json={"body": body})

    def _comments(self, number: int) -> list[Comment]:
        path = f"{self._repo_path}/issues/{number}/comments"
        return [_comment(c) for c in self.paginate(path, {"per_page": 100})]

    def _comment(self, number: int, body: str) -> None:
        self.request("POST", f"{self._repo_path}/issues/{number}/comments", json={"body": body})

    def _add_labels(self, pr: PullRequest, labels: list[str]) -> None:
        path = f"{self._repo_path}/issues/{pr.number}/labels"
        self.request("POST", path, json={"labels": labels})

    def _remove_label(self, pr: PullRequest, label: str) -> None:
        path = f"{self._repo_path}/issues/{pr.number}/labels/{quote(label, safe='')}"
        self.request("DELETE", path)

    def _statuses(self, sha: str) -> dict[str, tuple[str, str]]:
        data = self.request("GET", f"{self._repo_path}/commits/{sha}/status").json()
        out = {}
        for s in data.get("statuses") or []:
            state = s.get(self.STATUS_FIELD)
            out[s["context"]] = ("failure" if state == "error" else state, s["description"] or "")
        return out

    def _set_status(self, sha: str, context: str, state: str, description: str) -> None:
        self.request(
            "POST",
            f"{self._repo_path}/statuses/{sha}",
            # GitHub keeps at most 140 characters of a description
            json={"state": state, "context": context, "description": description[:140]},
        )

    def _reviews(self, number: int) -> list[Review]:
        path = f"{self._repo_path}/pulls/{number}/reviews"
        out = []
        for r in self.paginate(path, {"per_page": 100}):
            state = _REVIEW_STATES.get(r.get("state", ""))
            if state is None:  # PENDING (not submitted) or DISMISSED: not a word that counts
                continue
            out.append(
                Review(
                    author=(r.get("user") or {}).get("login", ""),
                    state=state,  # type: ignore[arg-type]
                    at=parse_time(r.get("submitted_at")),
                    commit=r.get("commit_id"),
                    body=r.get("body") or "",
                )
            )
        return out
