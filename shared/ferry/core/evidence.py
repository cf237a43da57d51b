"""What is known about a digest, as plain values: CI and check results, people's words, and the
candidate chosen for an environment. The Redis state stores load these; the gates read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

ANY_CHECK = "*"  # a CI result without a check name


@dataclass(frozen=True)
class Evidence:
    """What is known about one digest in one environment: CI results by check name."""

    checks: dict[str, str] = field(default_factory=dict)  # check -> "success" | "failure"
    urls: dict[str, str] = field(default_factory=dict)

    def green(self) -> set[str]:
        return {name for name, status in self.checks.items() if status == "success"}


@dataclass(frozen=True)
class Word:
    """One person's latest word about a digest for an environment: an approval or a rejection.
    Each actor has one standing word per (digest, environment); a later one replaces it."""

    kind: Literal["approval", "rejection"]
    actor: str
    digest: str
    env: str
    reason: str = ""
    at: datetime | None = None  # when it was given (None: before Ferry kept the time)
    # The channel that carried it: "cli" (`ferry approve`, or anything on ferry:signals) or
    # "forge" (a review on the promotion PR, read from the forge); see gates.approval.via.
    via: Literal["cli", "forge"] = "cli"


@dataclass(frozen=True)
class Candidate:
    """The digest chosen for (service, environment), how new its build is, and the fence that
    orders the choices: each new choice gets a higher fence, and pr-writer leaves alone a command
    whose fence a later choice has passed."""

    digest: str
    rank: float  # when it was built (epoch seconds): a newer build outranks an older one
    promotion_id: str
    fence: int = 0
