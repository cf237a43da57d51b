"""canary-watcher joins its consumer groups (canary, changes) and does nothing else yet: the
groups exist from the first start at id 0, so the version that handles these
streams will find the whole backlog."""

from ferry.runtime.worker import WorkerSpec

WORKER = WorkerSpec(
    name="canary-watcher",
    handlers={},
    joins=("canary", "changes"),
    description="judges canary analysis and rolls back (not yet: joins its groups only)",
)
