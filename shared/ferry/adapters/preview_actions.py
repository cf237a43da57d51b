"""What preview-reaper does to an application pull request: remove a label, post a comment.

`PreviewActions` is the small interface the reaper needs. With the local forge the application
PRs are not on disk, so `LocalPreviewActions` records each action on the preview's record (shown by
`ferry previews ls`); `HttpPreviewActions` acts on the PR through GitHub's, GitLab's or Gitea's
REST API. Both are safe to call again: removing an absent label is not an error.

Errors follow the forge contract (`ferry.adapters.forge`): a timeout, a refused connection, a 5xx
or a 429 is a `TransientForgeError` (retry later), anything else a `PermanentForgeError`.
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import quote

import httpx

from ferry.adapters.forge.base import PermanentForgeError, TransientForgeError
from ferry.adapters.preview_store import PreviewStore
from ferry.runtime.logging import scrub_text

TIMEOUT_S = 10.0


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
        self.store.log_action(
            repo, pr, {"action": "comment", "body": body, "dry_run": self.dry_run}
        )


class HttpPreviewActions:
    """Label removal and comments over a forge's REST API (github, gitlab or gitea)."""

    def __init__(
        self, kind: str, base_url: str, token: str | None, *, timeout: float = TIMEOUT_S
    ) -> None:
        if kind not in ("github", "gitlab", "gitea"):
            raise ValueError(f"no preview actions for forge {kind!r}: use github, gitlab or gitea")
        self.kind = kind
        headers = {"User-Agent": "ferry-preview-reaper"}
        if token:
            headers["Authorization"] = f"Bearer {token}" if kind != "gitea" else f"token {token}"
        if kind == "github":
            headers["Accept"] = "application/vnd.github+json"
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def remove_label(self, repo: str, pr: int, label: str) -> None:
        if self.kind == "github":
            path = f"/repos/{repo}/issues/{pr}/labels/{quote(label, safe='')}"
            self._call("DELETE", path, absent_ok=True)
        elif self.kind == "gitlab":
            path = f"/projects/{quote(repo, safe='')}/merge_requests/{pr}"
            self._call("PUT", path, json={"remove_labels": label})
        else:
            # Gitea removes an issue's label by the label's id.
            labels = self._call("GET", f"/repos/{repo}/issues/{pr}/labels")
            for found in labels or []:
                if found.get("name") == label:
                    path = f"/repos/{repo}/issues/{pr}/labels/{found['id']}"
                    self._call("DELETE", path, absent_ok=True)

    def comment(self, repo: str, pr: int, body: str) -> None:
        if self.kind == "gitlab":
            path = f"/projects/{quote(repo, safe='')}/merge_requests/{pr}/notes"
        else:
            path = f"/repos/{repo}/issues/{pr}/comments"
        self._call("POST", path, json={"body": body})

    def _call(self, method: str, path: str, *, absent_ok: bool = False, **kw: Any) -> Any:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise TransientForgeError(
                f"{method} {path}: {type(e).__name__}: {scrub_text(str(e))}"
            ) from None
        status = response.status_code
        if status == 404 and absent_ok:
            return None
        if status == 429 or status >= 500:
            retry_after = response.headers.get("Retry-After")
            raise TransientForgeError(
                f"{method} {path}: HTTP {status}",
                retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        if status >= 400:
            raise PermanentForgeError(
                f"{method} {path}: HTTP {status}: {scrub_text(response.text[:200])}"
            )
        return response.json() if response.content else None
