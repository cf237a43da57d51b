"""What a verified webhook delivery means to Ferry, and publishing it once.

- A promotion pull request (one of Ferry's, in the GitOps repository) merged or closed on the
  forge becomes `pr_merged` / `pr_closed` on ferry:changes, with who did it: the same change
  pr-writer reports when it merges or closes, under the same once key, so whichever comes first
  is the one published.
- A review of a promotion pull request, or a push to it, becomes a `review` signal: gate-evaluator
  then reads the reviews from the forge itself (a signal on a stream is not trusted as an
  approval; see gate_evaluator.reviews).
- A pull request in any other repository is an application PR: its events go to ferry:previews.
- A CI result (Ferry's own JSON body, a GitHub Actions run or a GitLab pipeline) goes to ferry:ci.
- Argo CD's notification about an application becomes an `argocd` signal (what it runs, synced
  or not, healthy or not) for gate-evaluator: with `live_when`, it is what makes a digest live.

Each event gets an id derived from the delivery, and is published once per delivery whichever
ingress replica receives it (the marker is written with the entry, atomically, in Redis).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ferry.adapters.bus import Bus
from ferry.adapters.forge.webhooks import (
    ArgoHook,
    BadPayload,
    CommentHook,
    Hook,
    PipelineHook,
    PullHook,
    ReviewHook,
)
from ferry.adapters.state import PromotionStore
from ferry.core.errors import one_line
from ferry.core.events import (
    Change,
    CiResult,
    Event,
    PreviewEvent,
    Signal,
    describe,
    promotion_of_key,
)

Lookup = Callable[[str], dict[str, str] | None]


@dataclass(frozen=True)
class Outcome:
    """What one delivery did: events published, events already published by an earlier
    delivery (a retry), and what was not followed."""

    published: int = 0
    duplicates: int = 0
    ignored: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "published": self.published,
            "duplicates": self.duplicates,
            "ignored": list(self.ignored),
        }


def events_of(
    hooks: Sequence[Hook], *, gitops_repo: str | None, promotion: Lookup, event_id: str
) -> tuple[list[Event], list[str]]:
    """The events HOOKS stand for, and a sentence for each hook that stands for none.
    PROMOTION looks up what a promotion id stands for; EVENT_ID is the delivery's prefix."""
    events: list[Event] = []
    ignored: list[str] = []
    for i, hook in enumerate(hooks):
        eid = f"{event_id}:{i}"
        try:
            if isinstance(hook, PipelineHook):
                events.append(CiResult.model_validate({**_present(hook.fields), "event_id": eid}))
                continue
            if isinstance(hook, ArgoHook):
                events.append(argocd_signal(hook, eid))
                continue
            if _same_repo(hook.repo, gitops_repo):
                event, why = _promotion_event(hook, promotion, eid)
            else:
                event, why = _preview_event(hook, eid)
        except ValidationError as e:
            raise BadPayload(one_line(describe(e))) from e
        if event is not None:
            events.append(event)
        else:
            ignored.append(why)
    return events, ignored


def argocd_signal(hook: ArgoHook, eid: str) -> Signal:
    """What Argo CD reports about an application, as a signal about its service in its env."""
    return Signal(
        kind="argocd",
        event_id=eid,
        service=hook.service,
        env=hook.env,
        digest=hook.digest,
        app=hook.app,
        sync=hook.sync,  # type: ignore[arg-type]
        health=hook.health,  # type: ignore[arg-type]
    )


def ci_event(body: dict[str, Any], delivery: str) -> CiResult:
    """Ferry's documented /webhooks/ci body: the fields of `ferry publish ci`."""
    data = dict(body)
    data["kind"] = "ci"
    data.setdefault("event_id", f"ci:{delivery}")
    try:
        return CiResult.model_validate(data)
    except ValidationError as e:
        raise BadPayload(one_line(describe(e))) from e


def publish(bus: Bus, events: Sequence[Event], provider: str, delivery: str) -> Outcome:
    """Publish EVENTS once each: under their own once key (a change pr-writer may report too),
    else under the delivery's id, so a retried delivery publishes nothing new."""
    published = duplicates = 0
    for i, event in enumerate(events):
        key = getattr(event, "once_key", None) or f"webhook:{provider}:{delivery}:{i}"
        if bus.publish_once(key, event) is None:
            duplicates += 1
        else:
            published += 1
    return Outcome(published, duplicates)


def lookup(bus: Bus) -> Lookup:
    return PromotionStore(bus).get


def promotion_change(pid: str, record: dict[str, str], kind: str, **extra: Any) -> Change:
    """The change KIND of promotion PID (RECORD: what PromotionStore keeps of it), as pr-writer
    reports it: a person's merge or close on the forge, by webhook, `ferry pr` or reconcile."""
    return Change.about(
        kind,
        promotion_id=pid,
        service=record["service"],
        digest=record["digest"],
        env=record["target_env"],
        source_env=record.get("source_env"),
        **extra,
    )


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _same_repo(repo: str, gitops_repo: str | None) -> bool:
    return gitops_repo is not None and repo.strip("/").lower() == gitops_repo.strip("/").lower()


def _promotion_event(hook: Hook, promotion: Lookup, eid: str) -> tuple[Event | None, str]:
    number = getattr(hook, "number", None)
    if isinstance(hook, PipelineHook | ArgoHook) or hook.key is None:
        return None, f"#{number} in the GitOps repository is not a Ferry promotion"
    pid = promotion_of_key(hook.key)  # a key may carry the attempt of a promotion asked again
    record = promotion(pid)
    if not record or "service" not in record:
        return None, f"#{number}: promotion {pid} is unknown to this Ferry"
    if isinstance(hook, PullHook) and hook.action in ("merged", "closed"):
        kind = "pr_merged" if hook.action == "merged" else "pr_closed"
        by = f" by {hook.actor}" if hook.actor else ""
        change = promotion_change(
            pid,
            record,
            kind,
            pr=hook.number,
            merge_commit=hook.merge_commit,
            actor=hook.actor,
            reason=f"{hook.action} on the forge{by}",
        )
        return change, ""
    if isinstance(hook, ReviewHook) or (
        isinstance(hook, PullHook) and hook.action == "synchronized"
    ):
        # The reviews are read from the forge by gate-evaluator: a push makes older reviews
        # outdated, a review or a dismissal changes who approves.
        signal = Signal(
            kind="review",
            event_id=eid,
            service=record["service"],
            digest=record["digest"],
            env=record["target_env"],
            actor=hook.actor,
            pr=hook.number,
        )
        return signal, ""
    what = hook.action if isinstance(hook, PullHook) else "comment"
    return None, f"#{number}: {what} on a promotion pull request changes nothing"


_PREVIEW_KIND = {
    "opened": "opened",
    "reopened": "opened",
    "closed": "closed",
    "merged": "closed",
    "labeled": "labeled",
    "unlabeled": "unlabeled",
    "synchronized": "updated",
    "edited": "updated",
}


def _preview_event(hook: Hook, eid: str) -> tuple[Event | None, str]:
    """An application pull request's event for preview-reaper: labels are the whole set, except
    on labeled / unlabeled (those added or removed); any review or comment is activity."""
    assert not isinstance(hook, PipelineHook | ArgoHook)
    if isinstance(hook, ReviewHook | CommentHook):
        kind, labels = "updated", hook.labels
    else:
        kind = _PREVIEW_KIND[hook.action]
        labels = hook.changed if kind in ("labeled", "unlabeled") else hook.labels
        if kind in ("labeled", "unlabeled") and not hook.changed:
            kind, labels = "updated", hook.labels  # the forge did not say which labels changed
    event = PreviewEvent(
        kind=kind,  # type: ignore[arg-type]
        event_id=eid,
        repo=hook.repo,
        pr=hook.number,
        team=_team(hook.labels),
        labels=list(labels),
    )
    return event, ""


def _team(labels: Sequence[str]) -> str | None:
    """The team a preview counts against: a `team:NAME` (or `team/NAME`) label on the PR."""
    for label in labels:
        for prefix in ("team:", "team/"):
            if label.startswith(prefix) and label[len(prefix) :].strip():
                return label[len(prefix) :].strip()
    return None
