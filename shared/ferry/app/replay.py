"""Re-drive work: replay a range of a stream, retry or drop dead letters (docs/architecture.md).

A replayed entry keeps its event id, so effects already done are skipped by the workers'
idempotency (promotion ids, the forge's PR keys, publish-once); effects that failed are done again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from ferry.adapters.bus import STREAM_MAXLEN, Bus
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
    chosen = []
    for raw_id, raw in bus.redis.xrange(bus.stream(short), min=start, max=end):
        entry_id, fields = raw_id.decode(), decode_fields(raw)
        if service is not None and _service_of(fields) != service:
            continue
        chosen.append(Replayed(entry_id, _with_identity(short, entry_id, fields)))
    if chosen and not dry_run:
        with bus.redis.pipeline(transaction=True) as pipe:
            for item in chosen:
                pipe.xadd(bus.stream(short), item.fields, maxlen=STREAM_MAXLEN, approximate=True)
            pipe.execute()
    return chosen


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
    """Put dead letters back on the streams they came from, and take them off the DLQ."""
    letters = dead_letters(bus, ids)
    prefix = bus.settings.stream_prefix
    with bus.redis.pipeline(transaction=True) as pipe:
        for dlq_id, letter in letters:
            short = letter.stream.removeprefix(prefix)
            if short not in MODELS or not letter.stream.startswith(prefix):
                raise ReplayError(
                    f"dead letter {dlq_id} came from {letter.stream!r}, not a stream of this "
                    f"Ferry (prefix {prefix!r}): drop it instead"
                )
            fields = {k: str(v) for k, v in letter.payload.items()}
            pipe.xadd(
                letter.stream,
                _with_identity(short, letter.entry_id, fields),
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
            pipe.xdel(bus.stream("dlq"), dlq_id)
        pipe.execute()
    return [dlq_id for dlq_id, _ in letters]


def drop(bus: Bus, ids: list[str] | None) -> list[str]:
    """Delete dead letters for good."""
    letters = dead_letters(bus, ids)
    if letters:
        bus.redis.xdel(bus.stream("dlq"), *[dlq_id for dlq_id, _ in letters])
    return [dlq_id for dlq_id, _ in letters]
