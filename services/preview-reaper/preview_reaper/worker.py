"""preview-reaper bounds the cost of per-PR preview environments: it tracks application PRs from
`ferry:previews`, warns before a preview's TTL runs out, reaps it at expiry (removes the label and
comments why) and refuses previews beyond a team's quota."""

from ferry.runtime.worker import WorkerSpec
from preview_reaper.handlers import handle_preview_event
from preview_reaper.timer import run

WORKER = WorkerSpec(
    name="preview-reaper",
    handlers={"previews": handle_preview_event},
    background=run,
    description="reaps previews past their TTL or their team's quota",
)
