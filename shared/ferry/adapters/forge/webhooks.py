"""What the forges send: authenticity checks for their webhooks, and their payloads read into a
few provider-independent hooks (a pull request changed, a review, a comment, a pipeline ended).

Each forge signs differently, as its documentation describes: GitHub an HMAC-SHA256 of the raw
body in `X-Hub-Signature-256: sha256=<hex>`, Gitea and Forgejo the same HMAC as bare hex in
`X-Gitea-Signature` (`X-Forgejo-Signature`), GitLab the shared secret itself in `X-Gitlab-Token`.
Ferry's own CI endpoint is signed as GitHub signs, in `X-Ferry-Signature-256`. Argo CD's
notifications cannot sign a body: `/webhooks/argocd` takes the shared secret itself in
`X-Ferry-Token` (set as a header of the notification service), or the same HMAC as `/webhooks/ci`.
Every comparison takes constant time (`hmac.compare_digest`).

Reading a payload raises `BadPayload` with one line that says what is missing; a delivery of an
event Ferry does not follow reads as no hooks at all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ferry.adapters.forge.http import split_key

PROVIDERS = ("github", "gitlab", "gitea", "ci", "argocd")

PullAction = Literal[
    "opened", "closed", "merged", "reopened", "labeled", "unlabeled", "synchronized", "edited"
]
ReviewState = Literal["approved", "changes_requested", "dismissed", "commented"]


class Unauthentic(ValueError):
    """A delivery without a valid signature (or token): refused with 401."""


class BadPayload(ValueError):
    """A delivery that cannot be read: refused with 400, the message says why."""


# ---------------------------------------------------------------------- authenticity

_SIGNATURE_HEADER = {
    "github": "x-hub-signature-256",
    "gitea": "x-gitea-signature",
    "gitlab": "x-gitlab-token",
    "ci": "x-ferry-signature-256",
    "argocd": "x-ferry-token",
}


def sign(secret: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of BODY under SECRET, as GitHub, Gitea and Ferry's CI endpoint sign."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_headers(provider: str, secret: str, body: bytes) -> dict[str, str]:
    """The header that authenticates BODY for PROVIDER (what a sender sets)."""
    if provider == "gitlab":
        return {"X-Gitlab-Token": secret}
    if provider == "argocd":
        return {"X-Ferry-Token": secret}
    if provider == "gitea":
        return {"X-Gitea-Signature": sign(secret, body)}
    name = "X-Hub-Signature-256" if provider == "github" else "X-Ferry-Signature-256"
    return {name: "sha256=" + sign(secret, body)}


def verify(provider: str, secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """Raise Unauthentic unless HEADERS authenticate BODY for PROVIDER under SECRET."""
    name = _SIGNATURE_HEADER[provider]
    given = headers.get(name)
    if given is None and provider == "gitea":
        name, given = "x-forgejo-signature", headers.get("x-forgejo-signature")
    if given is None and provider == "argocd" and "x-ferry-signature-256" in headers:
        return verify("ci", secret, headers, body)  # signed as /webhooks/ci is
    if not given:
        raise Unauthentic(f"unsigned: header {name} is missing")
    if provider in ("gitlab", "argocd"):
        expected = secret
    elif provider == "gitea":
        expected = sign(secret, body)
    else:
        expected = "sha256=" + sign(secret, body)
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        what = "token" if provider in ("gitlab", "argocd") else "signature"
        raise Unauthentic(f"{name}: the {what} does not match: check the webhook secret")


# ---------------------------------------------------------------------- what a delivery says


@dataclass(frozen=True)
class PullHook:
    """A pull request (merge request) opened, closed, merged, labelled, pushed to ..."""

    repo: str
    number: int
    action: PullAction
    actor: str | None
    key: str | None  # Ferry's promotion id, when the PR is one of Ferry's
    labels: tuple[str, ...] = ()  # every label the PR carries now
    changed: tuple[str, ...] = ()  # the labels added (labeled) or removed (unlabeled)
    head_sha: str | None = None
    merge_commit: str | None = None


@dataclass(frozen=True)
class ReviewHook:
    """A person reviewed a pull request (or a review was dismissed, or an approval withdrawn)."""

    repo: str
    number: int
    state: ReviewState
    actor: str | None
    key: str | None
    commit: str | None = None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class CommentHook:
    repo: str
    number: int
    actor: str | None
    key: str | None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class PipelineHook:
    """A CI run that ended, with what a build event needs (read from the run's variables or its
    title); FIELDS are those of `ferry publish ci`."""

    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArgoHook:
    """Argo CD's notification about one application: the service and environment it runs (from
    the application's labels), the digest it runs (from its images), its sync status and health."""

    app: str
    service: str
    env: str
    digest: str
    sync: str
    health: str


Hook = PullHook | ReviewHook | CommentHook | PipelineHook | ArgoHook


def read(provider: str, headers: Mapping[str, str], payload: Any) -> list[Hook]:
    """The hooks of one verified delivery (HEADERS with lower-case names)."""
    if not isinstance(payload, dict):
        raise BadPayload("the body must be a JSON object")
    try:
        if provider == "github":
            return _github(_event(headers, "x-github-event"), payload)
        if provider == "gitea":
            event = headers.get("x-gitea-event-type") or headers.get("x-forgejo-event-type")
            event = event or _event(headers, "x-gitea-event", "x-forgejo-event")
            return _gitea(event, payload)
        if provider == "gitlab":
            return _gitlab(_event(headers, "x-gitlab-event"), payload)
        if provider == "argocd":
            return [_argocd(payload)]
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        if isinstance(e, BadPayload):
            raise
        raise BadPayload(f"the payload lacks what a {provider} event carries ({_what(e)})") from e
    raise BadPayload(f"no webhook reader for {provider!r}")


def delivery_id(provider: str, headers: Mapping[str, str], body: bytes) -> str:
    """The forge's id of this delivery (the same on every retry); a hash of the body when the
    forge sends none (GitLab before 16.x), which a retry repeats as well."""
    names = {
        "github": ("x-github-delivery",),
        "gitea": ("x-gitea-delivery", "x-forgejo-delivery"),
        "gitlab": ("x-gitlab-event-uuid", "x-gitlab-webhook-uuid", "idempotency-key"),
        "ci": ("x-ferry-delivery",),
        "argocd": ("x-ferry-delivery",),
    }[provider]
    for name in names:
        value = headers.get(name, "").strip()
        if value:
            if len(value) > 200 or not value.isprintable():
                raise BadPayload(f"header {name} is not a delivery id (at most 200 characters)")
            return value
    return "body-" + hashlib.sha256(body).hexdigest()[:32]


def _event(headers: Mapping[str, str], *names: str) -> str:
    for name in names:
        if headers.get(name):
            return headers[name]
    raise BadPayload(f"header {names[0]} is missing: which event is this?")


def _what(e: Exception) -> str:
    if isinstance(e, KeyError):
        return f"no field {e.args[0]!r}"
    return type(e).__name__ + (f": {e}" if str(e) else "")


def _login(user: Any, name: str = "login") -> str | None:
    return user.get(name) if isinstance(user, dict) else None


def _number(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadPayload(f"a pull request number must be a positive integer, got {value!r}")
    return value


def _names(labels: Any, key: str = "name") -> tuple[str, ...]:
    if labels is not None and not isinstance(labels, list):
        raise BadPayload(f"labels must be a list, got {type(labels).__name__}")
    out = []
    for label in labels or []:
        name = label.get(key) if isinstance(label, dict) else label
        if isinstance(name, str):
            out.append(name)
    return tuple(out)


# GitHub's and Gitea's pull request actions, in Ferry's words (others are not followed).
_PULL_ACTIONS: dict[str, PullAction] = {
    "opened": "opened",
    "reopened": "reopened",
    "closed": "closed",
    "labeled": "labeled",
    "unlabeled": "unlabeled",
    "synchronize": "synchronized",  # GitHub
    "synchronized": "synchronized",  # Gitea
    "edited": "edited",
}


def _pull(repo: str, pr: dict[str, Any], action: PullAction, actor: str | None) -> PullHook:
    _, key = split_key(pr.get("body") if isinstance(pr.get("body"), str) else None)
    merged = bool(pr.get("merged"))
    if action == "closed" and merged:
        action = "merged"
    head = pr.get("head") or {}
    return PullHook(
        repo=repo,
        number=_number(pr["number"]),
        action=action,
        actor=actor,
        key=key,
        labels=_names(pr.get("labels")),
        head_sha=head.get("sha") if isinstance(head, dict) else None,
        merge_commit=pr.get("merge_commit_sha") if merged else None,
    )


def _repo(p: dict[str, Any], *path: str) -> str:
    value: Any = p
    for name in path:
        value = value[name]
    if not isinstance(value, str) or not value.strip():
        raise BadPayload(f"{'.'.join(path)} must name the repository, got {value!r:.60}")
    return value


def _github(event: str, p: dict[str, Any]) -> list[Hook]:
    if event not in ("pull_request", "pull_request_review", "issue_comment", "workflow_run"):
        return []  # ping, push and the rest: nothing Ferry follows
    actor = _login(p.get("sender"))
    if event == "workflow_run":
        return _workflow_run(p)
    repo = _repo(p, "repository", "full_name")
    if event == "pull_request":
        action = _PULL_ACTIONS.get(p["action"])
        if action is None:
            return []
        hook = _pull(repo, p["pull_request"], action, actor)
        if action in ("labeled", "unlabeled"):
            hook = _with_changed(hook, _names([p.get("label")]))
        return [hook]
    if event == "pull_request_review":
        pr, review = p["pull_request"], p["review"]
        _, key = split_key(pr.get("body"))
        state: ReviewState
        if p["action"] == "dismissed":
            state = "dismissed"
        else:
            state = {
                "approved": "approved",
                "changes_requested": "changes_requested",
            }.get(str(review.get("state", "")).lower(), "commented")  # type: ignore[assignment]
        return [
            ReviewHook(
                repo,
                _number(pr["number"]),
                state,
                _login(review.get("user")) or actor,
                key,
                review.get("commit_id"),
                _names(pr.get("labels")),
            )
        ]
    if event == "issue_comment":
        issue = p["issue"]
        if "pull_request" not in issue:  # a comment on an issue, not on a pull request
            return []
        _, key = split_key(issue.get("body"))
        return [
            CommentHook(repo, _number(issue["number"]), actor, key, _names(issue.get("labels")))
        ]
    return []


def _workflow_run(p: dict[str, Any]) -> list[Hook]:
    run = p["workflow_run"]
    if p["action"] != "completed":
        return []
    fields = _title_fields(run.get("display_title") or run.get("name") or "")
    status = {"success": "success", "failure": "failure"}.get(run.get("conclusion") or "")
    if not fields or status is None:
        return []
    fields.setdefault("commit", run.get("head_sha"))
    fields.setdefault("author", _login(run.get("triggering_actor") or run.get("actor")))
    fields.setdefault("url", run.get("html_url"))
    return [PipelineHook({**fields, "status": status})]


def _with_changed(hook: PullHook, changed: tuple[str, ...]) -> PullHook:
    return PullHook(**{**hook.__dict__, "changed": changed})


def _gitea(event: str, p: dict[str, Any]) -> list[Hook]:
    pr = p.get("pull_request")
    if not isinstance(pr, dict) and not isinstance(p.get("issue"), dict):
        return []  # push, create and the rest: nothing Ferry follows
    repo = _repo(p, "repository", "full_name")
    actor = _login(p.get("sender")) or _login(p.get("sender"), "username")
    if isinstance(pr, dict) and isinstance(p.get("review"), dict):
        _, key = split_key(pr.get("body"))
        kind = str(p["review"].get("type", "")) + " " + event
        state: ReviewState = (
            "approved"
            if "approved" in kind
            else "changes_requested"
            if "rejected" in kind
            else "commented"
        )
        return [
            ReviewHook(
                repo, _number(pr["number"]), state, actor, key, None, _names(pr.get("labels"))
            )
        ]
    if event in ("issue_comment", "pull_request_comment") or (
        isinstance(p.get("comment"), dict) and isinstance(p.get("issue"), dict)
    ):
        issue = p.get("issue") or {}
        if not issue.get("pull_request") and not isinstance(pr, dict):
            return []
        target = pr if isinstance(pr, dict) else issue
        _, key = split_key(target.get("body"))
        return [
            CommentHook(repo, _number(target["number"]), actor, key, _names(target.get("labels")))
        ]
    if isinstance(pr, dict):
        raw = p.get("action", "")
        if raw in ("label_updated", "label_cleared"):
            # Gitea says the labels changed, not which: the PR's whole label set follows.
            action: PullAction | None = "labeled" if raw == "label_updated" else "unlabeled"
        else:
            action = _PULL_ACTIONS.get(raw)
        if action is None:
            return []
        return [_pull(repo, pr, action, actor)]
    return []


# GitLab's merge request actions, in Ferry's words.
_GITLAB_ACTIONS: dict[str, PullAction] = {
    "open": "opened",
    "reopen": "reopened",
    "close": "closed",
    "merge": "merged",
}


def _gitlab(event: str, p: dict[str, Any]) -> list[Hook]:
    kind = p.get("object_kind")
    if kind == "pipeline" or event == "Pipeline Hook":
        return _gitlab_pipeline(p)
    if kind not in ("note", "merge_request") and event not in ("Note Hook", "Merge Request Hook"):
        return []  # push, tag, issue and the rest: nothing Ferry follows
    repo = _repo(p, "project", "path_with_namespace")
    actor = _login(p.get("user"), "username")
    labels = _names(p.get("labels"), "title")
    if kind == "note" or event == "Note Hook":
        mr = p.get("merge_request")
        if not isinstance(mr, dict):
            return []
        _, key = split_key(mr.get("description"))
        return [CommentHook(repo, _number(mr["iid"]), actor, key, labels)]
    attrs = p["object_attributes"]
    _, key = split_key(attrs.get("description"))
    number = _number(attrs["iid"])
    head = (attrs.get("last_commit") or {}).get("id")
    raw = attrs.get("action", "")
    if raw in ("approved", "approval"):
        return [ReviewHook(repo, number, "approved", actor, key, head, labels)]
    if raw in ("unapproved", "unapproval"):
        return [ReviewHook(repo, number, "dismissed", actor, key, head, labels)]
    action = _GITLAB_ACTIONS.get(raw)
    hooks: list[Hook] = []
    changes = p.get("changes") or {}
    if action is None and raw == "update":
        if attrs.get("oldrev"):
            action = "synchronized"
        elif "labels" in changes:
            before = set(_names(changes["labels"].get("previous"), "title"))
            after = set(_names(changes["labels"].get("current"), "title"))
            for act, names in (("labeled", after - before), ("unlabeled", before - after)):
                if names:
                    hooks.append(
                        PullHook(repo, number, act, actor, key, labels, tuple(sorted(names)), head)  # type: ignore[arg-type]
                    )
            return hooks
    if action is None:
        return []
    merge_commit = attrs.get("merge_commit_sha") if action == "merged" else None
    return [PullHook(repo, number, action, actor, key, labels, (), head, merge_commit)]


def _gitlab_pipeline(p: dict[str, Any]) -> list[Hook]:
    attrs = p["object_attributes"]
    status = {"success": "success", "failed": "failure"}.get(attrs.get("status") or "")
    variables = {
        v.get("key"): v.get("value")
        for v in attrs.get("variables") or []
        if isinstance(v, dict) and isinstance(v.get("key"), str)
    }
    fields: dict[str, Any] = {
        name.removeprefix("FERRY_").lower(): value
        for name, value in variables.items()
        if name in _PIPELINE_VARIABLES and isinstance(value, str) and value
    }
    if status is None or "service" not in fields or "digest" not in fields:
        return []  # a pipeline that is not a Ferry build or check, or has not ended
    fields.setdefault("commit", attrs.get("sha"))
    fields.setdefault("author", _login(p.get("user"), "username"))
    fields.setdefault("url", attrs.get("url"))
    return [PipelineHook({**fields, "status": status})]


_PIPELINE_VARIABLES = {
    "FERRY_SERVICE",
    "FERRY_DIGEST",
    "FERRY_IMAGE",
    "FERRY_ENV",
    "FERRY_CHECK",
}

_TITLE_FIELD = re.compile(r"\b(service|digest|image|env|check)=(\S+)")


def _title_fields(title: str) -> dict[str, Any]:
    """`service=api digest=sha256:... env=dev check=integration` anywhere in a run's title (a
    GitHub Actions `run-name:`); nothing unless both service and digest are there."""
    fields = dict(_TITLE_FIELD.findall(title[:1000]))
    return fields if "service" in fields and "digest" in fields else {}


# ---------------------------------------------------------------------- Argo CD

_DIGEST_IN_IMAGE = re.compile(r"([^\s\[\],\"']+)@(sha256:[0-9a-f]{64})")


def _argocd(p: dict[str, Any]) -> ArgoHook:
    """The body of Ferry's argocd-notifications template (docs/ingress.md): app, service, env,
    sync, health, and images (the application's `status.summary.images`, as a JSON list or as
    Go prints a list) or digest."""

    def text(name: str) -> str:
        value = p.get(name)
        if not isinstance(value, str) or not value.strip():
            raise BadPayload(f"field {name!r} is required: {_ARGO_FIELDS[name]}")
        return value.strip()

    app, service, env = text("app"), text("service"), text("env")
    digest = p.get("digest")
    if not (isinstance(digest, str) and digest.strip()):
        digest = _running_digest(p.get("images"), service, app)
    return ArgoHook(app, service, env, digest.strip(), text("sync"), text("health"))


_ARGO_FIELDS = {
    "app": "the application's name ({{.app.metadata.name}})",
    "service": "the service the application runs (a label of the application)",
    "env": "the environment the application runs in (a label of the application)",
    "sync": "the sync status ({{.app.status.sync.status}})",
    "health": "the health ({{.app.status.health.status}})",
}


def _running_digest(images: Any, service: str, app: str) -> str:
    """The digest the application runs: the one image pinned by digest, or of several the one
    whose repository ends with the service's name."""
    if isinstance(images, list):
        images = " ".join(i for i in images if isinstance(i, str))
    if not isinstance(images, str):
        raise BadPayload(
            "field 'images' (the application's status.summary.images) or 'digest' is required"
        )
    found = {digest: repo for repo, digest in _DIGEST_IN_IMAGE.findall(images[:20000])}
    if len(found) == 1:
        return next(iter(found))
    mine = {d for d, repo in found.items() if repo.rsplit("/", 1)[-1].split(":")[0] == service}
    if len(mine) == 1:
        return mine.pop()
    if not found:
        raise BadPayload(f"no image of {app} is pinned by digest (repository@sha256:...)")
    raise BadPayload(
        f"{app} runs {len(found)} images pinned by digest and not one of {service!r}: send 'digest'"
    )
