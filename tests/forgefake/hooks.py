"""The fake forge's webhooks: deliveries shaped as GitHub, Gitea and GitLab send them (headers,
signature or token, payload built from the fake's own API answers), posted to a receiver such as
`ferry ingress`. Each delivery has a fresh id unless one is given (a retry repeats it)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from ferry.adapters.forge.webhooks import signature_headers
from tests.forgefake.server import (
    FakeForge,
    FakePR,
    _gh_pr,
    _gh_review,
    _gitea_pr,
    _gl_mr,
    _now,
)


def app_pr(fake: FakeForge, number: int, labels: list[str], author: str = "dev") -> FakePR:
    """An application pull request on FAKE (a repository other than the GitOps one)."""
    now = _now()
    pr = FakePR(number, f"feature {number}", "", f"feature-{number}", "main", author, now, now)
    pr.labels = list(labels)
    with fake.lock:
        fake.pulls[number] = pr
    return pr


class Hooks:
    """Deliveries of FAKE's events to URL (the receiver's /webhooks/<flavour>), signed with
    SECRET."""

    def __init__(self, fake: FakeForge, url: str, secret: str) -> None:
        self.fake = fake
        self.url = url
        self.secret = secret
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    # ------------------------------------------------------------------ events

    def pull_request(
        self, number: int, action: str, *, sender: str, label: str | None = None
    ) -> httpx.Response:
        """ACTION: opened, closed (merged or not, as the PR is), labeled, unlabeled,
        synchronize."""
        f = self.fake
        with f.lock:
            pr = f.pulls[number]
            if f.flavour == "gitlab":
                return self._gitlab_mr(pr, action, sender=sender, label=label)
            data = _gh_pr(f, pr) if f.flavour == "github" else _gitea_pr(f, pr)
        payload: dict[str, Any] = {
            "action": action,
            "number": number,
            "pull_request": data,
            "repository": self._repository(),
            "sender": {"login": sender},
        }
        if f.flavour == "github":
            if label is not None:
                payload["label"] = {"name": label}
            return self.deliver("pull_request", payload)
        gitea_action = {
            "labeled": "label_updated",
            "unlabeled": "label_cleared",
            "synchronize": "synchronized",
        }.get(action, action)
        payload["action"] = gitea_action
        kind = "pull_request_label" if action in ("labeled", "unlabeled") else "pull_request"
        if action == "synchronize":
            kind = "pull_request_sync"
        return self.deliver("pull_request", payload, event_type=kind)

    def review(self, number: int, *, sender: str, state: str) -> httpx.Response:
        """The review SENDER just gave (state approved, changes_requested or commented; the
        fake forge must hold it: add it with FakeForge.add_review first), or `dismissed`."""
        f = self.fake
        with f.lock:
            pr = f.pulls[number]
            mine = [r for r in pr.reviews if r["user"] == sender]
            if f.flavour == "gitlab":
                action = "approved" if state == "approved" else "unapproved"
                return self._gitlab_mr(pr, action, sender=sender)
            data = _gh_pr(f, pr) if f.flavour == "github" else _gitea_pr(f, pr)
        if f.flavour == "github":
            review = _gh_review(mine[-1]) if mine else {"user": {"login": sender}, "state": state}
            payload = {
                "action": "dismissed" if state == "dismissed" else "submitted",
                "review": review,
                "pull_request": data,
                "repository": self._repository(),
                "sender": {"login": sender},
            }
            return self.deliver("pull_request_review", payload)
        kind = {
            "approved": "pull_request_review_approved",
            "changes_requested": "pull_request_review_rejected",
        }.get(state, "pull_request_review_comment")
        payload = {
            "action": "reviewed",
            "number": number,
            "pull_request": data,
            "repository": self._repository(),
            "sender": {"login": sender},
            "review": {"type": kind, "content": mine[-1]["body"] if mine else ""},
        }
        event = kind.replace("_review", "")  # X-Gitea-Event: pull_request_approved, ...
        return self.deliver(event, payload, event_type=kind)

    def comment(self, number: int, *, sender: str, body: str = "looks good") -> httpx.Response:
        f = self.fake
        with f.lock:
            pr = f.pulls[number]
            if f.flavour == "gitlab":
                payload: dict[str, Any] = {
                    "object_kind": "note",
                    "user": {"username": sender},
                    "project": {"path_with_namespace": f.full_name},
                    "object_attributes": {"note": body, "noteable_type": "MergeRequest"},
                    "merge_request": _gl_mr(f, pr),
                    "labels": [{"title": n} for n in pr.labels],
                }
                return self.deliver("Note Hook", payload)
            data = _gh_pr(f, pr) if f.flavour == "github" else _gitea_pr(f, pr)
        issue = {**data, "pull_request": {"url": data["url"]}}
        payload = {
            "action": "created",
            "issue": issue,
            "comment": {"body": body, "user": {"login": sender}},
            "repository": self._repository(),
            "sender": {"login": sender},
        }
        if f.flavour == "gitea":
            payload["is_pull"] = True
        return self.deliver("issue_comment", payload, event_type="pull_request_comment")

    # ------------------------------------------------------------------ delivery

    def deliver(
        self,
        event: str,
        payload: Any,
        *,
        event_type: str | None = None,
        delivery: str | None = None,
        body: bytes | None = None,
        secret: str | None = None,
    ) -> httpx.Response:
        """POST one delivery; BODY replaces the JSON of PAYLOAD (a test's own bytes)."""
        raw = body if body is not None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **self.headers(event, event_type, delivery)}
        headers.update(signature_headers(self.fake.flavour, secret or self.secret, raw))
        self.sent.append((event, raw, headers))
        return httpx.post(self.url, content=raw, headers=headers, timeout=10)

    def headers(
        self, event: str, event_type: str | None = None, delivery: str | None = None
    ) -> dict[str, str]:
        """The event and delivery headers of this flavour (no signature)."""
        delivery = delivery or str(uuid.uuid4())
        if self.fake.flavour == "github":
            return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery}
        if self.fake.flavour == "gitea":
            return {
                "X-Gitea-Event": event,
                "X-Gitea-Event-Type": event_type or event,
                "X-Gitea-Delivery": delivery,
            }
        return {"X-Gitlab-Event": event, "X-Gitlab-Event-UUID": delivery}

    def retry(self) -> httpx.Response:
        """Send the last delivery again, byte for byte (what a forge's redelivery does)."""
        _, raw, headers = self.sent[-1]
        return httpx.post(self.url, content=raw, headers=headers, timeout=10)

    def _repository(self) -> dict[str, Any]:
        return {"full_name": self.fake.full_name, "name": self.fake.name}

    def _gitlab_mr(
        self, pr: FakePR, action: str, *, sender: str, label: str | None = None
    ) -> httpx.Response:
        f = self.fake
        attrs = _gl_mr(f, pr)
        head = f.head_sha(pr)
        gl_action = {
            "opened": "open",
            "closed": "merge" if pr.merged else "close",
            "reopened": "reopen",
            "labeled": "update",
            "unlabeled": "update",
            "synchronize": "update",
        }.get(action, action)
        attrs.update({"action": gl_action, "last_commit": {"id": head}})
        payload: dict[str, Any] = {
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "user": {"username": sender},
            "project": {"path_with_namespace": f.full_name},
            "object_attributes": attrs,
            "labels": [{"title": n} for n in pr.labels],
            "changes": {},
        }
        if action == "synchronize":
            attrs["oldrev"] = "0" * 40
        if action in ("labeled", "unlabeled") and label is not None:
            now = [{"title": n} for n in pr.labels]
            before = (
                [x for x in now if x["title"] != label]
                if action == "labeled"
                else [*now, {"title": label}]
            )
            payload["changes"] = {"labels": {"previous": before, "current": now}}
        return self.deliver("Merge Request Hook", payload)
