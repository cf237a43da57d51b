"""The dispatcher's policy for one entry: decode -> validate -> count deliveries -> handle -> ack,
and a dead letter for whatever cannot succeed. Everything between the read and the ack happens
here, so that no failure, however odd the entry, can leave it pending for ever."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import structlog

from ferry.core.errors import Rejected
from ferry.core.events import InvalidEvent, decode_entry, parse
from ferry.runtime.health import Metrics
from ferry.runtime.logging import one_reason, scrub_fields
from ferry.runtime.worker import WorkerContext, WorkerSpec


class Dispatcher:
    """Validate -> count deliveries -> handle -> ack, with dead letters for what cannot succeed."""

    def __init__(
        self, spec: WorkerSpec, ctx: WorkerContext, metrics: Metrics | None = None
    ) -> None:
        self.spec = spec
        self.ctx = ctx
        self.metrics = metrics or Metrics()

    def process(self, short: str, entry_id: str, raw: Mapping[Any, Any], deliveries: int) -> str:
        """Handle one entry (its fields as read: bytes or str); returns what happened ("done",
        "dead", "retry")."""
        started = time.perf_counter()
        outcome = self._process(short, entry_id, raw, deliveries)
        self.metrics.observe(self.spec.name, short, outcome, time.perf_counter() - started)
        return outcome

    def _process(self, short: str, entry_id: str, raw: Mapping[Any, Any], deliveries: int) -> str:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            worker=self.spec.name,
            stream=self.ctx.bus.stream(short),
            entry_id=entry_id,
            deliveries=deliveries,
        )
        bus, group, log = self.ctx.bus, self.spec.name, self.ctx.log
        # A secret a producer put into an entry goes no further: not into a reason, a log line,
        # a pull request or the dead letter.
        fields, not_text = decode_entry(raw)
        fields = scrub_fields(fields)
        try:
            event = parse(short, fields, entry_id=entry_id, not_text=not_text)
        except InvalidEvent as e:
            log.warning("invalid entry", error=one_reason(str(e)))
            bus.dead_letter(short, group, entry_id, fields, f"invalid entry: {e}", deliveries)
            return "dead"
        structlog.contextvars.bind_contextvars(
            event_id=event.event_id, promotion_id=getattr(event, "promotion_id", None)
        )
        max_deliveries = self.ctx.settings.max_deliveries
        if deliveries > max_deliveries:
            last = bus.last_error(group, short, entry_id)
            reason = (
                f"gave up after {deliveries - 1} deliveries: {last}"
                if last
                else f"gave up: a worker died {deliveries - 1} times while handling this entry"
            )
            log.error("dead letter", error=reason)
            bus.dead_letter(short, group, entry_id, fields, reason, deliveries - 1)
            return "dead"
        try:
            self.spec.handlers[short](event, self.ctx)
        except Rejected as e:
            log.warning("rejected", error=one_reason(str(e)))
            bus.dead_letter(short, group, entry_id, fields, str(e), deliveries)
            return "dead"
        except Exception as e:  # noqa: BLE001 - any other failure is retried, then dead-lettered
            error = one_reason(f"{type(e).__name__}: {e}")
            if deliveries >= max_deliveries:
                log.error("dead letter", error=error)
                bus.dead_letter(
                    short,
                    group,
                    entry_id,
                    fields,
                    f"failed {deliveries} times, last: {error}",
                    deliveries,
                )
                return "dead"
            log.warning("handler failed; left pending for retry", error=error, exc_info=True)
            bus.remember_error(group, short, entry_id, error)
            return "retry"
        bus.ack(short, group, entry_id)
        return "done"
