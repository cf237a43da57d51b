"""Re-drive work: replay a range of a stream, retry or drop dead letters (docs/architecture.md).

A replayed entry keeps its event id, so effects already done are skipped by the workers'
idempotency (promotion ids, the forge's PR keys, publish-once); effects that failed are done again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from ferry.adapters.bus import Bus
from ferry.core.events import MODELS, DeadLetter, decode_fields, parse

# Streams whose entries cause work; audit and dlq are records, not requests.
REPLAYABLE = ("ci", "signals", "promotions", "changes", "canary", "previews")
_ENTRY_ID = re.compile(r"^\d+(-\d+)?$")


class ReplayError(ValueError):
    """A replay or retry that cannot be done as asked; the message says what to fix."""


@dataclass(frozen=True)
class Replayed:
    entry_id: str
    fields: dict[str, str]


def stream_bound(text: str, what: str) -> str:
    """An entry id ('1795711479023-0' or '1795711479023') or an ISO time, as an XRANGE bound."""
    if _ENTRY_ID.match(text):
        return text
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(
            f"{what} must be a stream entry id (1795711479023-0) or an ISO time "
            f"(2026-11-26T09:00:00Z), got {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return str(int(when.timestamp() * 1000))


def _with_identity(short: str, entry_id: str, fields: dict[str, str]) -> dict[str, str]:
    """FIELDS with the event id they had when first read (the entry id stood in for a missing
    one), so that the copy is the same event to every idempotency check."""
    if "kind" not in fields and "json" in fields:
        try:
            data = json.loads(fields["json"])
        except json.JSONDecodeError:
            return fields  # it will be dead-lettered again, with the same reason
        if isinstance(data, dict) and "event_id" not in data:
            data["event_id"] = f"{short}:{entry_id}"
            return {**fields, "json": json.dumps(data)}
        return fields
    return fields if "event_id" in fields else {**fields, "event_id": f"{short}:{entry_id}"}


def _service_of(fields: dict[str, str]) -> str | None:
    if "service" in fields:
        return fields["service"]
    try:
        data = json.loads(fields.get("json", ""))
    except json.JSONDecodeError:
        return None
    return data.get("service") if isinstance(data, dict) else None


def replay(
    bus: Bus,
    short: str,
    *,
    start: str = "-",
    end: str = "+",
    service: str | None = None,
    dry_run: bool = False,
) -> list[Replayed]:
    """Publish again the entries of stream SHORT between START and END (about SERVICE)."""
    if short not in REPLAYABLE:
        raise ReplayError(
            f"stream {short!r} cannot be replayed: choose one of {', '.join(REPLAYABLE)}"
        )
    gone = trimmed_before(bus, short, start)
    if gone is not None and end != "+" and _id(end, last=True) < _id(gone.oldest or "+"):
        raise ReplayError(f"nothing from {start} to {end} is kept any more: {gone.sentence}")
    chosen = []
    for raw_id, raw in bus.redis.xrange(bus.stream(short), min=start, max=end):
        entry_id, fields = raw_id.decode(), decode_fields(raw)
        if service is not None and _service_of(fields) != service:
            continue
        chosen.append(Replayed(entry_id, _with_identity(short, entry_id, fields)))
    if chosen and not dry_run:
        with bus.redis.pipeline(transaction=True) as pipe:
            for item in chosen:
                pipe.xadd(bus.stream(short), item.fields, **bus.trimming())
            pipe.execute()
    return chosen


@dataclass(frozen=True)
class Trimmed:
    """What retention took from the head of a stream that a replay asks for."""

    stream: str
    oldest: str | None  # the oldest entry still kept; None: none is
    removed: int
    maxlen: int
    max_age_s: int

    @property
    def sentence(self) -> str:
        age = f" of the last {self.max_age_s} s (FERRY_STREAM_MAX_AGE_S)" if self.max_age_s else ""
        kept = (
            f"its oldest entry kept is {self.oldest} ({_when(self.oldest)})"
            if self.oldest
            else "it keeps no entry now"
        )
        return (
            f"{self.stream} has trimmed {self.removed} older entries and {kept}; it keeps about "
            f"{self.maxlen} entries (FERRY_STREAM_MAXLEN){age}"
        )


def trimmed_before(bus: Bus, short: str, start: str) -> Trimmed | None:
    """What retention trimmed of stream SHORT before the replay's START (an XRANGE bound), or
    None when START is within what is kept (or is '-': everything kept)."""
    if start == "-":
        return None
    try:
        info = bus.redis.xinfo_stream(bus.stream(short))
    except redis.ResponseError:
        return None  # no such stream: nothing was ever published, nothing trimmed
    removed = int(info.get("entries-added", info["length"])) - int(info["length"])
    first = info.get("first-entry")
    oldest = first[0].decode() if first else None
    if removed <= 0 or (oldest is not None and _id(start) >= _id(oldest)):
        return None
    settings = bus.settings
    return Trimmed(
        bus.stream(short), oldest, removed, settings.stream_maxlen, settings.stream_max_age_s
    )


def _id(bound: str, *, last: bool = False) -> tuple[int, int]:
    """An XRANGE bound as a comparable (ms, seq); a bare ms is its first (or LAST) entry."""
    if bound == "+":
        return (2**64, 0)
    ms, _, seq = bound.partition("-")
    return (int(ms), int(seq) if seq else (2**64 if last else 0))


def _when(entry_id: str) -> str:
    ms = int(entry_id.split("-", 1)[0])
    return (
        datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def dead_letters(bus: Bus, ids: list[str] | None = None) -> list[tuple[str, DeadLetter]]:
    """Dead letters, oldest first: all of them, or those with the given ids."""
    out = []
    for raw_id, raw in bus.redis.xrange(bus.stream("dlq")):
        letter = parse("dlq", decode_fields(raw))
        assert isinstance(letter, DeadLetter)
        out.append((raw_id.decode(), letter))
    if ids is None:
        return out
    known = dict(out)
    missing = [i for i in ids if i not in known]
    if missing:
        raise ReplayError(f"no dead letter {missing[0]!r}: `ferry dlq ls` lists them")
    return [(i, known[i]) for i in ids]


def retry(bus: Bus, ids: list[str] | None) -> list[str]:
    """Put dead letters back on the streams they came from, and take them off the DLQ. Each
    letter is published once (keyed by its DLQ id) and then deleted: the DLQ and the letter's
    stream may live on different Redis Cluster nodes, so a retry cut short between the two steps
    leaves the letter on the DLQ, and the next retry only deletes it."""
    letters = dead_letters(bus, ids)
    prefix = bus.settings.stream_prefix
    for dlq_id, letter in letters:
        short = letter.stream.removeprefix(prefix)
        if short not in MODELS or not letter.stream.startswith(prefix):
            raise ReplayError(
                f"dead letter {dlq_id} came from {letter.stream!r}, not a stream of this "
                f"Ferry (prefix {prefix!r}): drop it instead"
            )
        if not letter.payload:
            raise ReplayError(
                f"dead letter {dlq_id} has no data to put back: its entry was trimmed from "
                f"{letter.stream} before it was handled; re-publish the event from its "
                f"source, then `ferry dlq drop {dlq_id}`"
            )
    for dlq_id, letter in letters:
        short = letter.stream.removeprefix(prefix)
        fields = {k: str(v) for k, v in letter.payload.items()}
        bus.publish_fields_once(
            f"retry:{dlq_id}", short, _with_identity(short, letter.entry_id, fields)
        )
        bus.redis.xdel(bus.stream("dlq"), dlq_id)
    return [dlq_id for dlq_id, _ in letters]


def drop(bus: Bus, ids: list[str] | None) -> list[str]:
    """Delete dead letters for good."""
    letters = dead_letters(bus, ids)
    if letters:
        bus.redis.xdel(bus.stream("dlq"), *[dlq_id for dlq_id, _ in letters])
    return [dlq_id for dlq_id, _ in letters]
