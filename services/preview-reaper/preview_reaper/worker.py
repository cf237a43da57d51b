"""preview-reaper joins its consumer groups (previews) and does nothing else yet: the groups
exist from the first start at id 0, so the version that handles these
streams will find the whole backlog."""

from ferry.runtime.worker import WorkerSpec

WORKER = WorkerSpec(
    name="preview-reaper",
    handlers={},
    joins=("previews",),
    description="reaps previews past their TTL or quota (not yet: joins its groups only)",
)
