"""What Argo CD says runs: its latest report on the application that deploys a service in an
environment (the digest it runs, its sync status and health), and since when that digest has been
synced, or synced and healthy, without a break. Pure: reports come in as values.

With `live_when: synced` or `healthy` on an environment, a digest counts as live there (its soak
starts, the next environment may follow) only from the moment Argo CD reports it so; a later
report that it is out of sync or degraded takes that back until it is reported well again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

LiveWhen = Literal["merged", "synced", "healthy"]
SyncStatus = Literal["Synced", "OutOfSync", "Unknown"]
HealthStatus = Literal["Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"]


@dataclass(frozen=True)
class Deployment:
    """Argo CD's latest report on the application APP that runs a service in an environment."""

    digest: str
    app: str
    sync: str
    health: str
    at: datetime  # when Argo CD reported it
    synced_since: datetime | None = None  # DIGEST reported synced since then, without a break
    healthy_since: datetime | None = None  # DIGEST reported synced and healthy since then

    def live_since(self, digest: str, live_when: LiveWhen) -> datetime | None:
        """Since when DIGEST counts as live under LIVE_WHEN by these reports (None: not now)."""
        if self.digest != digest:
            return None
        return self.healthy_since if live_when == "healthy" else self.synced_since

    @property
    def said(self) -> str:
        """The report in a few words: `api-staging Synced, Degraded at sha256:...`."""
        return f"{self.app} {self.sync}, {self.health} at {self.digest}"


def observe(
    previous: Deployment | None,
    *,
    digest: str,
    app: str,
    sync: str,
    health: str,
    at: datetime,
) -> Deployment | None:
    """The state after a report; None when the report is older than PREVIOUS (reports may arrive
    out of order: the latest one stands)."""
    if previous is not None and at < previous.at:
        return None
    # The same digest stays live from the first of an unbroken run of good reports.
    kept = previous if previous is not None and previous.digest == digest else None
    synced = sync == "Synced"
    healthy = synced and health == "Healthy"
    synced_since = ((kept and kept.synced_since) or at) if synced else None
    healthy_since = ((kept and kept.healthy_since) or at) if healthy else None
    return Deployment(digest, app, sync, health, at, synced_since, healthy_since)


def waiting_for_argo(
    service: str, env: str, digest: str, live_when: LiveWhen, last: Deployment | None
) -> str:
    """Why DIGEST does not count as live in ENV yet: what Argo CD has to report, and what it
    reported last."""
    wanted = "synced+healthy" if live_when == "healthy" else "synced"
    why = f"waiting for Argo CD to report {service} {wanted} in {env} at {digest}"
    if last is None:
        return why + " (no report from Argo CD yet; live_when: " + live_when + ")"
    return f"{why} (last report: {last.said})"
