"""What a worker is: its spec (name = consumer group, the streams it handles) and the context
a handler gets."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ferry.adapters.bus import Bus
from ferry.core.events import Event
from ferry.runtime.settings import Settings


@dataclass
class WorkerContext:
    """What a handler gets besides the event: settings, the bus, and the worker's own resources."""

    name: str
    settings: Settings
    bus: Bus
    log: Any
    resources: dict[str, Any] = field(default_factory=dict)

    def audit(
        self,
        action: str,
        subject: str,
        outcome: str,
        reason: str,
        event: Event | None,
        *,
        pipe: Any = None,
    ) -> None:
        """Record a decision (EVENT is what caused it; None for a timer). PIPE: queue the record
        in that pipeline, executed by the caller with its other writes."""
        self.log.info("decision", action=action, subject=subject, outcome=outcome, reason=reason)
        caused_by = event.event_id if event is not None else None
        self.bus.audit(self.name, action, subject, outcome, reason, caused_by=caused_by, pipe=pipe)


Handler = Callable[[Event, WorkerContext], None]


@dataclass
class WorkerSpec:
    """A worker type: its name (= consumer group), the streams it reads and how it handles each."""

    name: str
    handlers: dict[str, Handler]
    setup: Callable[[WorkerContext], None] | None = None
    description: str = ""
    # Streams whose group this worker joins without reading them yet, so that a later version
    # finds the backlog there instead of skipping it.
    joins: tuple[str, ...] = ()
    # Called every FERRY_TICK_S (in a thread) for what time, not an event, moves on.
    tick: Callable[[WorkerContext], None] | None = None
    # Runs in a thread of its own beside the consumers until the event is set: for work that
    # waits on due times (`ferry.runtime.timers.run` sleeps until the next one or the event).
    background: Callable[[WorkerContext, threading.Event], None] | None = None
    # Entries read per XREADGROUP unless FERRY_READ_COUNT says otherwise: many for quick work,
    # 1 for slow work that other replicas should share.
    read_count: int = 1
