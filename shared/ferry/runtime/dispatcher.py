"""The dispatcher's policy for one entry: decode -> validate -> count deliveries -> handle -> ack,
and a dead letter for whatever cannot succeed. Everything between the read and the ack happens
here, so that no failure, however odd the entry, can leave it pending for ever. A batch (one
XREADGROUP's entries) is handled in stream order and its handled entries are acknowledged with one
XACK after the last one's effects: a crash mid-batch leaves them all pending, to be reclaimed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ferry.core.errors import Rejected
from ferry.core.events import InvalidEvent, decode_entry, parse
from ferry.runtime import failpoints
from ferry.runtime.health import Metrics
from ferry.runtime.logging import add_context, one_reason, scrub_fields, set_context
from ferry.runtime.worker import WorkerContext, WorkerSpec

# (entry id, its fields as read, how many times it has been delivered)
Entry = tuple[str, Mapping[Any, Any], int]


class BatchInterrupted(RuntimeError):
    """Redis failed while handling ENTRY_ID of a batch: it and the LEFT entries after it stay
    pending (to be reclaimed); the cause is chained."""

    def __init__(self, entry_id: str, left: int) -> None:
        super().__init__(f"batch interrupted at {entry_id} ({left} entries left pending)")
        self.entry_id = entry_id
        self.left = left


# Services whose entries of one read are handled at once (each service's in order).
PARALLEL = 8


def _by_service(entries: list[Entry]) -> list[list[int]]:
    """The indexes of ENTRIES grouped by the service they name, each group in stream order. An
    entry whose service cannot be seen without parsing it (a JSON-encoded entry, a malformed
    one) might be about any service: then everything is one group, handled in order."""
    groups: dict[Any, list[int]] = {}
    for n, (_, raw, _) in enumerate(entries):
        service = raw.get(b"service", raw.get("service"))
        if service is None:
            return [list(range(len(entries)))]
        groups.setdefault(service, []).append(n)
    return list(groups.values())


class Dispatcher:
    """Validate -> count deliveries -> handle -> ack, with dead letters for what cannot succeed."""

    def __init__(
        self, spec: WorkerSpec, ctx: WorkerContext, metrics: Metrics | None = None
    ) -> None:
        self.spec = spec
        self.ctx = ctx
        self.metrics = metrics or Metrics()
        self._threads: ThreadPoolExecutor | None = None

    def process(
        self,
        short: str,
        entry_id: str,
        raw: Mapping[Any, Any],
        deliveries: int,
        *,
        ack: bool = True,
    ) -> str:
        """Handle one entry (its fields as read: bytes or str); returns what happened ("done",
        "dead", "retry"). With ACK false a "done" entry is left for the caller to acknowledge."""
        started = time.perf_counter()
        bus = self.ctx.bus
        # The entry's writes that need no answer are queued and go out with the XACK.
        with bus.deferring():
            # Its writes are its own: one that fails as the XACK's transaction runs leaves it
            # pending (Bus.ack).
            with bus.owning((entry_id, deliveries)):
                outcome = self._process(short, entry_id, raw, deliveries)
            if outcome == "done" and ack:
                bus.ack(short, self.spec.name, entry_id)
        self.metrics.observe(self.spec.name, short, outcome, time.perf_counter() - started)
        return outcome

    def process_batch(self, short: str, entries: list[Entry]) -> list[str]:
        """Handle ENTRIES, then acknowledge the handled ones with one XACK (dead letters are
        acknowledged with their letter). Entries about one service are handled in their order, one
        after the other; entries about different services at once, up to PARALLEL, so that their
        Redis round trips overlap (each decision still takes its (service, environment) lock).
        The writes the handlers queue (`Bus.deferring`) go out in front of each one's next round
        trip; the last ones with the XACK, in one round trip, when every entry is about one
        service, else with the last lock's release as each service's entries are done.
        If Redis fails on an entry, it and the later ones about its service stay pending (and
        the earlier ones whose queued writes could not be sent), the handled ones are still
        acknowledged when possible, and BatchInterrupted is raised."""
        bus = self.ctx.bus
        groups = _by_service(entries)
        outcomes = ["pending"] * len(entries)
        handled = [0]
        failed: list[tuple[int, int, BaseException]] = []

        def run(group: list[int]) -> Any:
            # For each handled entry: the marks around its queued writes (see Bus.mark).
            marks: list[tuple[int, int, int]] = []
            with bus.deferring():
                try:
                    # The entries of one service one after the other: a decision's lock and
                    # reads are kept for the next decision about the same subject.
                    with bus.keeping():
                        for k, n in enumerate(group):
                            entry_id, raw, deliveries = entries[n]
                            start = bus.mark()
                            try:
                                outcomes[n] = self.process(
                                    short, entry_id, raw, deliveries, ack=False
                                )
                            except Exception as e:  # noqa: BLE001 - raised below, after the others
                                with contextlib.suppress(Exception):
                                    bus.flush()  # the writes made before the failure
                                failed.append((n, len(group) - k, e))
                                return None
                            marks.append((n, start, bus.mark()))
                            handled[0] += 1
                            if handled[0] < len(entries):
                                failpoints.hit(f"{self.spec.name}.mid-batch")
                    if len(groups) > 1:
                        # In a thread of the pool: its writes and its last lock's release go
                        # now, not with the XACK once every other service's entries are done.
                        # Kept that long, the lock could hold up another replica's batch
                        # while one of this batch's services waits for a lock that batch keeps
                        # the same way: each would wait for the other (up to the lock wait).
                        with contextlib.suppress(Exception):  # lost: its entries stay pending
                            bus.flush()
                    return None
                finally:
                    # An entry whose queued writes were lost with a failed round trip (a later
                    # entry's) is not acknowledged: it stays pending, to be handled again.
                    for n, a, b in marks:
                        if outcomes[n] == "done" and not bus.all_sent(a, b):
                            outcomes[n] = "pending"

        with bus.deferring():
            if len(groups) == 1:
                run(groups[0])
            else:
                # What this thread queued (the last read's XACK, see `Bus.ack`) goes before
                # the other threads' round trips.
                bus.flush()
                list(self._pool().map(run, groups))
            done = [entries[n][0] for n, outcome in enumerate(outcomes) if outcome == "done"]
            if failed:
                n, left, error = min(failed, key=lambda f: f[0])
                with contextlib.suppress(Exception):  # else redelivered; effects are idempotent
                    if done:
                        bus.ack(short, self.spec.name, *done)
                raise BatchInterrupted(entries[n][0], sum(f[1] for f in failed)) from error
            if done:
                try:
                    bus.ack(short, self.spec.name, *done)
                except Exception as e:
                    # A write that failed as the XACK ran left its entry pending (`pending`).
                    pending: list[str] = getattr(e, "pending", done)
                    raise BatchInterrupted(pending[0] if pending else done[0], len(pending)) from e
        return outcomes

    def _pool(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(PARALLEL, thread_name_prefix=self.spec.name)
        return self._threads

    def trimmed(self, short: str, entry_id: str) -> None:
        """ENTRY_ID was trimmed from the stream while pending (its replica died or was slow, and
        the stream grew past its retention meanwhile): its data is gone, so say so where a person
        looks, with what to do about it."""
        stream = self.ctx.bus.stream(short)
        reason = (
            f"entry {entry_id} of {stream}: its data was trimmed from the stream before "
            f"{self.spec.name} handled it; re-publish the event from its source, or `ferry replay "
            f"{short} --from <id>` a range still in the stream"
        )
        self.ctx.log.error("dead letter", stream=stream, entry_id=entry_id, error=reason)
        self.ctx.bus.dead_letter(short, self.spec.name, entry_id, {}, reason, 0)
        self.metrics.observe(self.spec.name, short, "dead", 0.0)

    def _process(self, short: str, entry_id: str, raw: Mapping[Any, Any], deliveries: int) -> str:
        set_context(
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
        add_context(event_id=event.event_id, promotion_id=getattr(event, "promotion_id", None))
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
        return "done"
