"""What preview-reaper writes on a preview's record when the rule or the quota decides: the mark,
the forge actions it leads to (with the comment's words), and the index entries."""

from __future__ import annotations

from datetime import datetime

from ferry.adapters.preview_store import Action, Record
from ferry.core.policy import Previews, format_duration
from ferry.core.previews import Mark, PreviewStatus, preview_status
from ferry.core.windows import human

# Ids of actions done, kept to skip a decision's actions twice; older ones are forgotten.
DONE_KEPT = 50


def settle(policy: Previews, record: Record, now: datetime) -> PreviewStatus:
    """Recompute RECORD's index entries (its team's live set, its due time) from the rule."""
    status = preview_status(policy, record.history(), now)
    record.live_team = (status.team or "") if status.live else None
    due = [a.next_try for a in record.outbox]
    if status.due is not None and status.state in ("active", "warned"):
        due.append(status.due.timestamp())
    if status.state == "pending":
        due.append(now.timestamp())  # the quota check was left undone: look again now
    record.due = min(due) if due else None
    return status


def decide(policy: Previews, record: Record, now: datetime, status: PreviewStatus) -> Mark | None:
    """Take the warning or the reaping STATUS says is due: mark it and queue its actions."""
    assert status.period is not None and status.expires_at is not None
    if status.action == "warn":
        mark = Mark(
            kind="warned",
            at=now,
            period=status.period,
            reason=status.reason,
            for_end=status.expires_at,
            dry_run=policy.dry_run,
        )
        queue(record, mark, comment=warning(policy, record, status, now))
    elif status.action == "reap":
        reason = status.reason
        if reason.startswith("expired"):
            reason += f" ({_rule(policy)})"
        mark = Mark(
            kind="reaped", at=now, period=status.period, reason=reason, dry_run=policy.dry_run
        )
        queue(record, mark, label=policy.label, comment=reaped(policy, reason))
    else:
        return None
    return mark


def refuse(policy: Previews, record: Record, now: datetime, period: datetime, why: str) -> Mark:
    """The team is at its quota: refuse this preview with one comment and remove its label."""
    mark = Mark(kind="refused", at=now, period=period, reason=why, dry_run=policy.dry_run)
    body = (
        f"Ferry refused a preview for this pull request: {why}.\n\n"
        f"The `{policy.label}` label was removed."
    )
    queue(record, mark, label=policy.label, comment=body)
    return mark


def evict(policy: Previews, record: Record, now: datetime, period: datetime, why: str) -> Mark:
    """Reap this preview to make room for a newer one (the policy's `evict`)."""
    mark = Mark(kind="reaped", at=now, period=period, reason=why, dry_run=policy.dry_run)
    queue(record, mark, label=policy.label, comment=reaped(policy, why))
    return mark


def queue(record: Record, mark: Mark, *, label: str | None = None, comment: str) -> None:
    """Add MARK and the actions it leads to (keyed by the mark: never queued twice)."""
    record.marks.append(mark)
    prefix = (
        f"{mark.kind}:{mark.period.isoformat()}:{mark.for_end.isoformat() if mark.for_end else ''}"
    )
    wanted = []
    if label is not None:
        wanted.append(Action(id=f"{prefix}:label", kind="remove_label", arg=label))
    wanted.append(Action(id=f"{prefix}:comment", kind="comment", arg=comment))
    known = set(record.done) | {a.id for a in record.outbox}
    record.outbox.extend(a for a in wanted if a.id not in known)


def done(record: Record, action_id: str) -> None:
    record.outbox = [a for a in record.outbox if a.id != action_id]
    record.done = [*record.done, action_id][-DONE_KEPT:]


def warning(policy: Previews, record: Record, status: PreviewStatus, now: datetime) -> str:
    assert status.expires_at is not None and status.period is not None
    limit = status.period + policy.max_ttl
    return (
        f"This preview will be reaped at {status.expires_at.isoformat()} "
        f"(in {human(status.expires_at - now)}): {_rule(policy)}.\n\n"
        f"To keep it longer, run `ferry previews extend {record.key}` "
        f"(at most until {limit.isoformat()}, {format_duration(policy.max_ttl)} after it started)."
    )


def reaped(policy: Previews, reason: str) -> str:
    return (
        f"Ferry reaped this preview: {reason}.\n\n"
        f"The `{policy.label}` label was removed; add it again for a new preview."
    )


def _rule(policy: Previews) -> str:
    start = "its creation" if policy.ttl_from == "created" else "its last activity"
    return (
        f"ttl {format_duration(policy.ttl)} from {start}, extensions and `until` "
        f"at most {format_duration(policy.max_ttl)} after it started"
    )
