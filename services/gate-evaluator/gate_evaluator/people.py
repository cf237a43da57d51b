"""A person asks for a promotion again (`ferry promote`): after its pull request was closed, its
merge reverted on main, or its digest rolled back. Everything that would answer "already
requested" is reset, then gate-evaluator decides as for a new promotion."""

from __future__ import annotations

from ferry.adapters.state import PromotionStore, RollbackStore
from ferry.core.events import Change, PromotionCommand, Signal, promotion_id
from ferry.runtime.worker import WorkerContext

# The commands and changes of one promotion that are published once: asked for again, each may
# be published once more.
_COMMANDS = ("open", "merge", "close")
_CHANGES = ("pr_opened", "pr_merged", "pr_closed")


def ask_again(ctx: WorkerContext, event: Signal) -> None:
    """Forget how far EVENT's promotion got (its projection, publish-once keys, a rollback that
    holds its digest back) under a new attempt, and say so in the audit."""
    pid = promotion_id(event.service, event.digest, event.env)
    subject = f"{event.service}@{event.digest} -> {event.env}"
    promotions = PromotionStore(ctx.bus)
    view = promotions.view(pid)
    if view is not None and view.state in ("requested", "open"):
        # Still in flight: a second pull request for it would only compete with the first.
        ctx.audit("promote", subject, "in flight", f"PR #{view.pr} is {view.state}", event)
        return
    attempt = promotions.ask_again(pid)
    for kind in _COMMANDS:
        ctx.bus.forget_once(PromotionCommand.key_for(pid, kind), PromotionCommand.on_stream)
    for kind in _CHANGES:
        ctx.bus.forget_once(Change.key_for(pid, kind), Change.on_stream)
    RollbackStore(ctx.bus).forget(event.service, event.env, event.digest)
    said = f"by {event.actor}" + (f": {event.reason}" if event.reason else "")
    ctx.audit(
        "promote",
        subject,
        "asked again",
        f"{said} (attempt {attempt})",
        event,
    )
