"""The Gitea provider (Forgejo too): Gitea's REST API v1.

Its pull-request API mirrors GitHub's, with its own differences, which this class covers: a PR
from a head into a base is looked up by `GET /pulls/{base}/{head}`; pages are `page`/`limit`;
labels are set by id, so a missing label is created first; a merge is `POST .../merge` with `Do`
and `head_commit_id`; review states are `REQUEST_CHANGES` and `COMMENT`; no rate-limit headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from ferry.adapters.forge.base import Comment, PullRequest, PullRequestNotFound
from ferry.adapters.forge.github import GitHubForge, _comment
from ferry.adapters.forge.http import ForgeHTTPError

# Gitea's `limit` is capped at 50 by default (MAX_RESPONSE_ITEMS)
PAGE = 50


class GiteaForge(GitHubForge):
    """A repository OWNER/NAME on Gitea or Forgejo."""

    provider = "gitea"
    PAGE_PARAMS = {"limit": PAGE}
    MERGE_VERB = "POST"
    MERGE_FIELDS = ("Do", "head_commit_id", "MergeTitleField", "MergeMessageField")
    STATUS_FIELD = "status"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._label_ids: dict[str, int] = {}

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"token {token}", "Accept": "application/json"}

    def _find_by_head(self, head: str, base: str) -> PullRequest | None:
        try:
            resp = self.request(
                "GET", f"{self._repo_path}/pulls/{quote(base, safe='')}/{quote(head, safe='/')}"
            )
        except PullRequestNotFound:
            return None
        pr = self._pr(resp.json())
        # The newest PR of the head: a closed one is history, a new PR is opened instead.
        return pr if pr.state in ("open", "merged") else None

    def _create(
        self, head: str, base: str, title: str, body: str, labels: Sequence[str]
    ) -> PullRequest:
        payload = {"head": head, "base": base, "title": title, "body": body}
        return self._pr(self.request("POST", f"{self._repo_path}/pulls", json=payload).json())

    def _label_id(self, name: str) -> int:
        if name not in self._label_ids:
            for label in self.paginate(f"{self._repo_path}/labels", {"limit": PAGE}):
                self._label_ids[label["name"]] = label["id"]
        if name not in self._label_ids:
            try:
                created = self.request(
                    "POST", f"{self._repo_path}/labels", json={"name": name, "color": "#ededed"}
                ).json()
                self._label_ids[name] = created["id"]
            except ForgeHTTPError as e:
                if e.status != 409:  # 409: another replica created it meanwhile
                    raise
                return self._label_id(name)
        return self._label_ids[name]

    def _add_labels(self, pr: PullRequest, labels: list[str]) -> None:
        ids = [self._label_id(name) for name in labels]
        self.request("POST", f"{self._repo_path}/issues/{pr.number}/labels", json={"labels": ids})

    def _remove_label(self, pr: PullRequest, label: str) -> None:
        path = f"{self._repo_path}/issues/{pr.number}/labels/{self._label_id(label)}"
        self.request("DELETE", path)

    def _comments(self, number: int) -> list[Comment]:
        # Gitea's comment list is one page, not paginated
        data = self.request("GET", f"{self._repo_path}/issues/{number}/comments").json()
        return [_comment(c) for c in data]
