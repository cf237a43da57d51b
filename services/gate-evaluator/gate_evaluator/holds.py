"""`ferry hold` and `ferry release`: a person stops promotions into an environment (of one
service, or of all) and lifts the stop. The hold is a gate in `decide`; this records it, says
so in the audit, and names the services to decide about again."""

from __future__ import annotations

from ferry.adapters.state import HoldStore
from ferry.core.errors import Rejected
from ferry.core.events import Hold
from ferry.runtime import resources
from ferry.runtime.worker import WorkerContext


def record(event: Hold, ctx: WorkerContext) -> list[str]:
    """Keep or lift the hold EVENT names; returns the services whose decisions it changes."""
    repo = resources.gitops(ctx)
    main = repo.at_main()
    if event.env not in main.policy.env_names():
        defined = ", ".join(main.policy.env_names())
        raise Rejected(f"unknown environment {event.env!r}: ferry.yaml defines {defined}")
    store = HoldStore(ctx.bus)
    if event.kind == "hold":
        store.hold(event.env, event.service, event.actor, event.reason or "", event.occurred_at)
        outcome = "held"
    else:
        outcome = "released" if store.release(event.env, event.service) else "not held"
    said = f"by {event.actor}" + (f": {event.reason}" if event.reason else "")
    ctx.audit(event.kind, event.scope, outcome, said, event)
    services = [event.service] if event.service else repo.services()
    return [s for s in services if main.values_exists(s, event.env)]
