"""What people are told, and how it looks on the wire: pure functions from an event and the
policy to a notice, its receivers, and the body (and signature) each receiver gets.

A notice is sent when a promotion needs an approval (its pull request opened in an environment
with an approval gate), is rejected, fails, is rolled back, or when an entry is dead-lettered.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass

from ferry.core.events import Change, DeadLetter, Event, Signal
from ferry.core.policy import NoticeKind, Policy, PolicyError, Webhook

# The notifier's own dead letters are not announced: a receiver that is down would otherwise
# be told, through itself, that it is down, for ever.
NOTIFIER = "notifier"
SIGNATURE_HEADER = "X-Ferry-Signature"


@dataclass(frozen=True)
class Notice:
    kind: NoticeKind
    event_id: str  # the event it is about: one notice per event and receiver
    text: str
    service: str | None = None
    env: str | None = None
    digest: str | None = None
    pr: int | None = None


def notice_for(event: Event, policy: Policy) -> Notice | None:
    """The notice EVENT calls for, or None."""
    if isinstance(event, Signal) and event.kind == "rejection":
        why = f": {event.reason}" if event.reason else ""
        text = f"{event.service} {event.digest[:19]} rejected for {event.env} by {event.actor}{why}"
        return Notice("rejected", event.event_id, text, event.service, event.env, event.digest)
    if isinstance(event, DeadLetter):
        if event.worker == NOTIFIER:
            return None
        text = (
            f"{event.worker} dead-lettered an entry of {event.stream}: {event.error} "
            "(`ferry dlq ls` lists it; `ferry dlq retry ID` after fixing the cause)"
        )
        return Notice("dead_letter", event.event_id, text)
    if not isinstance(event, Change):
        return None
    about = dict(service=event.service, env=event.env, digest=event.digest, pr=event.pr)
    what = f"{event.service} {event.digest[:19]}"
    if event.kind == "promotion_failed":
        text = f"promotion of {what} to {event.env} failed: {event.reason or 'no reason given'}"
        return Notice("failed", event.event_id, text, **about)  # type: ignore[arg-type]
    if event.kind == "pr_merged" and event.rollback_of:
        text = (
            f"{event.service} in {event.env} rolled back from {event.rollback_of[:19]} to "
            f"{event.digest[:19]} (PR #{event.pr})" + (f": {event.reason}" if event.reason else "")
        )
        return Notice("rolled_back", event.event_id, text, **about)  # type: ignore[arg-type]
    if event.kind == "pr_opened" and not event.rollback_of and _gated(policy, event):
        text = (
            f"{what} needs approval for {event.env}: PR #{event.pr}; "
            f"`ferry approve {event.service} {event.digest} --env {event.env} --as USER`"
        )
        return Notice("needs_approval", event.event_id, text, **about)  # type: ignore[arg-type]
    return None


def _gated(policy: Policy, event: Change) -> bool:
    try:
        return policy.environment(event.env, event.service).gates.approval is not None
    except PolicyError:
        return False


def receivers(policy: Policy, notice: Notice) -> list[Webhook]:
    """The webhooks that want NOTICE (by kind, and by environment where it has one)."""
    return [
        hook
        for hook in policy.notifications.webhooks
        if notice.kind in hook.events
        and (not hook.environments or notice.env is None or notice.env in hook.environments)
    ]


def body(hook: Webhook, notice: Notice) -> bytes:
    """What HOOK receives: Slack's `{"text": ...}`, or the notice itself as JSON."""
    if hook.kind == "slack":
        data: dict[str, object] = {"text": f"Ferry: {notice.text}"}
    else:
        data = {"source": "ferry", **asdict(notice)}
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, content: bytes) -> str:
    """The value of the X-Ferry-Signature header: HMAC-SHA256 of the body, hex, as GitHub
    signs its webhooks (`sha256=<hex>`)."""
    return "sha256=" + hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()
