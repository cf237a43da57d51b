"""What the HTTP forges (GitHub, Gitea, GitLab) share: one request path through the budget and the
error classification, retries with backoff and jitter (tenacity), the idempotent operations of the
`Forge` protocol, and the key index.

A provider subclass only says how its REST API does each primitive (`_create`, `_get`, ...); the
idempotency and retry rules live here once:

- every public method is safe to run again, and is re-run on a transient failure; each attempt
  first looks at what is there (a PR already open for the head, a PR already merged, a comment
  already posted), so a write that failed with a 5xx or a timeout but took effect is found, not
  repeated;
- 429 and secondary-limit answers block the token in the shared budget for Retry-After, so no
  replica sends anything before the forge allows it;
- permanent answers (401, 403, 404, 422, a protected branch) raise PermanentForgeError at once,
  with a sentence that says what to fix; the token is never in it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
import redis
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ferry.adapters.forge.base import (
    STATUS_STATES,
    Comment,
    ForgeError,
    HeadMoved,
    MergeConflict,
    PermanentForgeError,
    PullRequest,
    PullRequestNotFound,
    Review,
    TransientForgeError,
    utcnow,
)
from ferry.adapters.forge.budget import Budget

T = TypeVar("T")

# The key of a promotion PR travels in its description, so it survives without Ferry's Redis.
_KEY_MARKER = re.compile(r"\n*<!-- ferry-key: (\S+) -->\s*$")

# How long to wait for a forge that computes mergeability in the background (GitHub's null).
MERGEABLE_POLLS = 10


class ForgeHTTPError(PermanentForgeError):
    """The forge answered a 4xx that the operation may still make sense of (409, 405, 422)."""

    def __init__(self, message: str, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def with_key(body: str, key: str | None) -> str:
    """BODY with the key marker at its end (KEY None: BODY as it is)."""
    return f"{body}\n\n<!-- ferry-key: {key} -->" if key else body


def split_key(body: str | None) -> tuple[str, str | None]:
    """(the description without the marker, the key it carries or None)."""
    body = body or ""
    m = _KEY_MARKER.search(body)
    if m is None:
        return body, None
    return body[: m.start()], m.group(1)


def newest_reusable(prs: Iterable[PullRequest], head: str) -> PullRequest | None:
    """The newest open or merged PR of HEAD among PRS: the one a retried open must reuse."""
    found = [p for p in prs if p.head == head and p.state in ("open", "merged")]
    return max(found, key=lambda p: p.number, default=None)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def comment_of(author: str, body: str, created_at: str | None) -> Comment:
    return Comment(author=author, body=body, at=parse_time(created_at) or utcnow())


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


class HTTPForge:
    """The shared half of an HTTP forge provider (see the module docstring)."""

    provider = "http"

    def __init__(
        self,
        *,
        api_url: str,
        repo: str,
        token: str,
        budget: Budget,
        keys: redis.Redis,
        key_prefix: str,
        merge_method: str = "merge",
        timeout_s: float = 30.0,
        attempts: int = 6,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.repo = repo
        self.budget = budget
        self.merge_method = merge_method
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._keys = keys
        self._key_index = f"{key_prefix}keys"
        self._http = httpx.Client(
            base_url=self.api_url,
            headers={**self._auth_headers(token), "User-Agent": "ferry"},
            timeout=timeout_s,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.api_url!r}, {self.repo!r})"

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ provider primitives

    def _auth_headers(self, token: str) -> dict[str, str]:
        raise NotImplementedError

    def _find_by_head(self, head: str, base: str) -> PullRequest | None:
        """The newest open or merged PR from HEAD into BASE (no comments or statuses)."""
        raise NotImplementedError

    def _create(
        self, head: str, base: str, title: str, body: str, labels: Sequence[str]
    ) -> PullRequest:
        raise NotImplementedError

    def _get(self, number: int) -> tuple[PullRequest, bool | None]:
        """The PR (no comments or statuses) and whether it merges cleanly (None: not known yet)."""
        raise NotImplementedError

    def _list(self, state: str | None) -> Iterator[PullRequest]:
        raise NotImplementedError

    def _merge(self, pr: PullRequest, method: str, sha: str, message: str | None) -> None:
        raise NotImplementedError

    def _close(self, number: int) -> None:
        raise NotImplementedError

    def _patch_body(self, number: int, body: str) -> None:
        raise NotImplementedError

    def _comments(self, number: int) -> list[Comment]:
        raise NotImplementedError

    def _comment(self, number: int, body: str) -> None:
        raise NotImplementedError

    def _add_labels(self, pr: PullRequest, labels: list[str]) -> None:
        raise NotImplementedError

    def _remove_label(self, pr: PullRequest, label: str) -> None:
        raise NotImplementedError

    def _statuses(self, sha: str) -> dict[str, tuple[str, str]]:
        """context -> (state, description) of the latest status of each context on SHA."""
        raise NotImplementedError

    def _set_status(self, sha: str, context: str, state: str, description: str) -> None:
        raise NotImplementedError

    def _reviews(self, number: int) -> list[Review]:
        raise NotImplementedError

    # ------------------------------------------------------------------ requests

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        url: str | None = None,
    ) -> httpx.Response:
        """One request through the budget; a 2xx response, or the error it means. A read is
        retried on its own (it changes nothing); a write is retried by the operation around it,
        which first looks whether the failed try took effect."""
        if method == "GET":
            try:
                return self._retrying(lambda: self._send(method, path, json, params, url))
            except TransientForgeError as e:
                e.exhausted = True  # type: ignore[attr-defined]  # the operation must not retry it again
                raise
        return self._send(method, path, json, params, url)

    def _send(
        self, method: str, path: str, json: Any, params: dict[str, Any] | None, url: str | None
    ) -> httpx.Response:
        self.budget.acquire(write=method != "GET")
        try:
            resp = self._http.request(method, url or path, json=json, params=params)
        except httpx.TimeoutException:
            raise TransientForgeError(
                f"{method} {path}: the forge did not answer in time"
            ) from None
        except httpx.TransportError as e:
            raise TransientForgeError(f"{method} {path}: {type(e).__name__}") from None
        self._note_limits(resp)
        if resp.status_code < 300:
            return resp
        raise self._error(method, path, resp)

    def paginate(self, path: str, params: dict[str, Any]) -> Iterator[Any]:
        """Every item of a paginated list, following the Link header's rel="next"."""
        resp = self.request("GET", path, params=params)
        while True:
            yield from resp.json()
            nxt = resp.links.get("next", {}).get("url")
            if not nxt:
                return
            resp = self.request("GET", path, url=nxt)

    def _note_limits(self, resp: httpx.Response) -> None:
        """A primary limit spent (remaining 0) blocks the token until its reset, fleet-wide."""
        headers = resp.headers
        remaining = headers.get("x-ratelimit-remaining") or headers.get("ratelimit-remaining")
        reset = headers.get("x-ratelimit-reset") or headers.get("ratelimit-reset")
        if remaining == "0" and reset and reset.isdigit():
            self.budget.block(int(reset) - utcnow().timestamp())

    def _error(self, method: str, path: str, resp: httpx.Response) -> ForgeError:
        status = resp.status_code
        detail = self._detail(resp)
        where = f"{self.provider} {method} {path} answered {status}"
        retry_after = _retry_after(resp)
        limited = status == 429 or (
            status == 403
            and (retry_after is not None or resp.headers.get("x-ratelimit-remaining") == "0")
        )
        if limited:
            wait = retry_after if retry_after is not None else 60.0
            self.budget.block(wait)
            return TransientForgeError(f"{where}: rate limited ({detail})", retry_after=wait)
        if status >= 500:
            return TransientForgeError(f"{where}: {detail}", retry_after=retry_after)
        if status == 401:
            return PermanentForgeError(
                f"{where}: the forge refused FERRY_FORGE_TOKEN ({detail}); set a valid token"
            )
        if status == 403:
            return PermanentForgeError(
                f"{where}: permission denied ({detail}); give the token write access to "
                f"{self.repo} (pull requests, contents, statuses)"
            )
        if status == 404:
            return PullRequestNotFound(
                f"{where}: not found ({detail}); check FERRY_FORGE_REPO={self.repo} and that the "
                "token can see it"
            )
        return ForgeHTTPError(f"{where}: {detail}", status, detail)

    @staticmethod
    def _detail(resp: httpx.Response) -> str:
        try:
            data = resp.json()
        except ValueError:
            return resp.text.strip()[:200] or resp.reason_phrase
        if isinstance(data, dict):
            message = data.get("message") or data.get("error") or ""
            errors = data.get("errors")
            if errors:
                message = f"{message}: {errors}"
            return str(message)[:300] or resp.reason_phrase
        return str(data)[:200]

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """Run ATTEMPT until it succeeds, a permanent error, or self.attempts tries; the wait
        grows with jitter and is never shorter than the forge's Retry-After."""
        backoff = wait_exponential_jitter(
            multiplier=self.backoff_s, max=10.0, jitter=self.backoff_s
        )

        def wait(state: Any) -> float:
            exc = state.outcome.exception() if state.outcome else None
            after = getattr(exc, "retry_after", None) or 0.0
            return max(float(after), backoff(state))

        retrying = Retrying(
            retry=retry_if_exception(
                lambda e: isinstance(e, TransientForgeError) and not getattr(e, "exhausted", False)
            ),
            stop=stop_after_attempt(self.attempts),
            wait=wait,
            reraise=True,
        )
        return retrying(attempt)

    # ------------------------------------------------------------------ the key index

    def _index(self, key: str | None, number: int) -> None:
        if key:
            self._keys.hset(self._key_index, key, number)

    # ------------------------------------------------------------------ the Forge protocol

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
        if not head:
            raise PermanentForgeError("the head branch of a pull request must not be empty")
        if head == base:
            raise PermanentForgeError(f"head and base are the same branch '{head}'")

        def attempt() -> PullRequest:
            if key is not None:
                known = self.find_pr(key)
                if known is not None:
                    return known
            # Reuse an open or merged PR of this head: a retried POST whose first try took effect.
            existing = self._find_by_head(head, base)
            if existing is None:
                try:
                    existing = self._create(head, base, title, with_key(body, key), list(labels))
                except ForgeHTTPError as e:
                    if e.status not in (409, 422):
                        raise
                    existing = self._find_by_head(head, base)  # "already exists": one raced us
                    if existing is None:
                        raise PermanentForgeError(
                            f"the forge refused the pull request from '{head}': {e.detail}"
                        ) from None
            self._index(key, existing.number)
            missing = [x for x in dict.fromkeys(labels) if x not in existing.labels]
            if missing and existing.state == "open":  # GitHub and Gitea label after creating
                self._add_labels(existing, missing)
                existing = existing.model_copy(update={"labels": existing.labels + missing})
            return self._full(existing)

        return self._retrying(attempt)

    def find_pr(self, key: str) -> PullRequest | None:
        number = self._keys.hget(self._key_index, key)
        if number is None:
            return None
        try:
            pr = self.get_pr(int(number))
        except PullRequestNotFound:
            return None
        return pr if pr.key == key else None

    def get_pr(self, number: int) -> PullRequest:
        return self._retrying(lambda: self._full(self._get(number)[0]))

    def list_prs(self, state: str | None = None) -> list[PullRequest]:
        if state not in (None, "all", "open", "merged", "closed"):
            raise ValueError(f"state must be open, merged or closed, got {state!r}")
        return self._retrying(lambda: sorted(self._list(state), key=lambda p: -p.number))

    def merge_pr(
        self, number: int, *, message: str | None = None, sha: str | None = None
    ) -> PullRequest:
        def attempt() -> PullRequest:
            pr, mergeable = self._get(number)
            if pr.state == "merged":
                return self._full(pr)  # merged by an earlier try that timed out, or by a person
            if pr.state == "closed":
                raise PermanentForgeError(f"pull request #{number} is closed: it cannot be merged")
            if sha is not None and pr.head_sha != sha:
                raise HeadMoved(
                    f"pull request #{number}: '{pr.head}' is at {pr.head_sha[:12]}, not the "
                    f"evaluated {sha[:12]}: not merged"
                )
            for _ in range(MERGEABLE_POLLS):
                if mergeable is not None:
                    break
                pr, mergeable = self._get(number)
            if mergeable is False:
                raise MergeConflict(
                    f"pull request #{number}: branch '{pr.head}' does not merge cleanly into "
                    f"'{pr.base}'"
                )
            try:
                self._merge(pr, self.merge_method, pr.head_sha, message)
            except ForgeHTTPError as e:
                return self._after_failed_merge(pr, e, sha)
            return self._full(self._get(number)[0])

        return self._retrying(attempt)

    def _after_failed_merge(
        self, pr: PullRequest, error: ForgeHTTPError, sha: str | None
    ) -> PullRequest:
        """Make sense of a refused merge: already merged (fine), a conflict, a head or base that
        moved (retry, or HeadMoved when the caller pinned the head), or a rule (permanent)."""
        now, mergeable = self._get(pr.number)
        if now.state == "merged":
            return self._full(now)
        if now.head_sha != pr.head_sha:
            if sha is not None:
                raise HeadMoved(
                    f"pull request #{pr.number}: '{pr.head}' moved after {sha[:12]} was "
                    "evaluated: not merged"
                ) from None
            raise TransientForgeError(f"pull request #{pr.number}: the head moved; merging again")
        if mergeable is False:
            raise MergeConflict(
                f"pull request #{pr.number}: branch '{pr.head}' does not merge cleanly into "
                f"'{pr.base}'"
            ) from None
        if error.status == 405 and "modified" in error.detail.lower():
            raise TransientForgeError(f"pull request #{pr.number}: '{pr.base}' moved; again")
        raise PermanentForgeError(
            f"the forge refused to merge pull request #{pr.number} into '{pr.base}': "
            f"{error.detail} (a protected branch or a required review?)"
        ) from None

    def close_pr(self, number: int, *, comment: str | None = None) -> PullRequest:
        def attempt() -> PullRequest:
            pr = self._full(self._get(number)[0])
            if pr.state == "closed":
                return pr
            if pr.state == "merged":
                raise PermanentForgeError(f"pull request #{number} is merged: it cannot be closed")
            if comment and not any(c.body == comment for c in pr.comments[-3:]):
                self._comment(number, comment)
            self._close(number)
            return self._full(self._get(number)[0])

        return self._retrying(attempt)

    def comment(self, number: int, body: str, *, author: str = "ferry") -> PullRequest:
        tries = 0

        def attempt() -> PullRequest:
            nonlocal tries
            tries += 1
            # A retried comment first looks whether the try that failed was posted after all.
            if tries == 1 or not any(c.body == body for c in self._comments(number)[-3:]):
                self._comment(number, body)
            return self._full(self._get(number)[0])

        return self._retrying(attempt)

    def update_body(self, number: int, body: str) -> PullRequest:
        def attempt() -> PullRequest:
            pr, _ = self._get(number)
            if pr.body != body:
                self._patch_body(number, with_key(body, pr.key))
                pr, _ = self._get(number)
            return self._full(pr)

        return self._retrying(attempt)

    def add_labels(self, number: int, labels: Iterable[str]) -> PullRequest:
        wanted = list(dict.fromkeys(labels))

        def attempt() -> PullRequest:
            pr, _ = self._get(number)
            new = [label for label in wanted if label not in pr.labels]
            if new:
                self._add_labels(pr, new)
                pr, _ = self._get(number)
            return self._full(pr)

        return self._retrying(attempt)

    def remove_label(self, number: int, label: str) -> PullRequest:
        def attempt() -> PullRequest:
            pr, _ = self._get(number)
            if label in pr.labels:
                try:
                    self._remove_label(pr, label)
                except PullRequestNotFound:
                    pass  # removed meanwhile (or by the try that timed out)
                pr, _ = self._get(number)
            return self._full(pr)

        return self._retrying(attempt)

    def set_status(
        self, number: int, context: str, state: str, description: str = ""
    ) -> PullRequest:
        if state not in STATUS_STATES:
            raise ValueError(f"status must be one of {', '.join(STATUS_STATES)}, got {state!r}")

        def attempt() -> PullRequest:
            pr, _ = self._get(number)
            if self._statuses(pr.head_sha).get(context) != (state, description):
                self._set_status(pr.head_sha, context, state, description)
            return self._full(pr)

        return self._retrying(attempt)

    def reviews(self, number: int) -> list[Review]:
        return self._retrying(lambda: self._reviews(number))

    # ------------------------------------------------------------------ helpers

    def _full(self, pr: PullRequest) -> PullRequest:
        """PR with its comments and its commit statuses."""
        statuses = self._statuses(pr.head_sha) if pr.state == "open" else {}
        return pr.model_copy(
            update={
                "comments": self._comments(pr.number),
                "statuses": {c: s for c, (s, _) in statuses.items() if s in STATUS_STATES},
                "status_descriptions": {c: d for c, (_, d) in statuses.items()},
            }
        )
