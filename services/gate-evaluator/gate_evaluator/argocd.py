"""gate-evaluator's handling of an `argocd` signal: Argo CD reports what the application of a
service runs in an environment, synced or not, healthy or not. Kept as the latest report per
(service, environment) (ferry.core.deployments.observe: an older report does not replace a newer
one), then the environments promoted from there are decided again: with `live_when: synced` or
`healthy`, this report is what lets the digest count as live there."""

from __future__ import annotations

from ferry.adapters.state import DeployStore
from ferry.core.deployments import observe
from ferry.core.events import Signal
from ferry.runtime import resources
from ferry.runtime.worker import WorkerContext


def handle_argocd(event: Signal, ctx: WorkerContext) -> None:
    from gate_evaluator.worker import consider

    assert event.app is not None and event.sync is not None and event.health is not None
    store = DeployStore(ctx.bus)
    subject = f"{event.service}@{event.digest} in {event.env}"
    said = f"Argo CD: {event.app} {event.sync}, {event.health}"
    with ctx.bus.lock(f"deployed:{event.service}:{event.env}"):
        now = observe(
            store.get(event.service, event.env),
            digest=event.digest,
            app=event.app,
            sync=event.sync,
            health=event.health,
            at=event.occurred_at,
        )
        if now is None:
            ctx.audit("deployed", subject, "older", f"{said}: a newer report stands", event)
            return
        store.put(event.service, event.env, now)
    ctx.audit("deployed", subject, "recorded", said, event)
    policy = resources.gitops(ctx).at_main().policy
    for target in policy.targets_from(event.env, event.service):
        consider(ctx, event, event.service, target, digest=event.digest, source=event.env)
