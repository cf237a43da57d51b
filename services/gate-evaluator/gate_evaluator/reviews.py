"""gate-evaluator's handling of a `review` signal: the reviews of a promotion pull request changed
(or its head moved). The signal only says where to look: the reviews themselves are read from
the forge, so whoever can write to Redis still cannot forge an approval that counts as a review."""

from __future__ import annotations

from typing import Any

from ferry.adapters.state import SignalStore
from ferry.core.errors import Rejected
from ferry.core.events import Signal, promotion_id, promotion_of_key
from ferry.core.reviews import review_words
from ferry.runtime import resources
from ferry.runtime.worker import WorkerContext


def forge(ctx: WorkerContext) -> Any:
    if "forge" not in ctx.resources:
        ctx.resources["forge"] = resources.forge(ctx.settings)
    return ctx.resources["forge"]


def handle_review(event: Signal, ctx: WorkerContext) -> None:
    """Read the reviews of the promotion's pull request from the forge, keep them as words with
    via "forge" (replacing the forge words kept before), then decide again."""
    from gate_evaluator.worker import consider

    subject = f"{event.service}@{event.digest} -> {event.env}"
    if event.pr is None:
        raise Rejected("a review signal needs 'pr': the promotion pull request's number")
    pid = promotion_id(event.service, event.digest, event.env)
    pr = forge(ctx).get_pr(event.pr)
    if pr.key is None or promotion_of_key(pr.key) != pid:
        raise Rejected(
            f"pull request #{event.pr} is not the promotion of {subject} ({pid}): "
            "its reviews are not approvals of it"
        )
    words, notes = review_words(
        forge(ctx).reviews(pr.number), pr.head_sha, event.digest, event.env, pr.number
    )
    SignalStore(ctx.bus).replace_via("forge", event.service, event.env, event.digest, words)
    said = ", ".join(f"{w.actor} {w.kind}" for w in words) or "no standing review"
    ctx.audit("review", subject, "recorded", "; ".join([f"#{pr.number}: {said}", *notes]), event)
    consider(ctx, event, event.service, event.env, digest=event.digest)
