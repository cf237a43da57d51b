"""Every event contract round-trips: a valid event of each type, published by the bus to a real
stream, read back by XREADGROUP and handed to the dispatcher (decode -> scrub -> parse), is the
same event. Hypothesis builds the events from each model's own rules (docs/events.md)."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import pytest
import structlog
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ferry.adapters.bus import Bus
from ferry.core.deployments import HealthStatus, SyncStatus
from ferry.core.events import (
    MODELS,
    AuditRecord,
    CanaryMeasurement,
    Change,
    CiResult,
    DeadLetter,
    Event,
    Hold,
    PreviewEvent,
    PromotionCommand,
    Signal,
)
from ferry.runtime.dispatcher import Dispatcher
from ferry.runtime.logging import scrub_text
from ferry.runtime.settings import Settings
from ferry.runtime.worker import WorkerContext, WorkerSpec

_examples = itertools.count()

# --- values as each model accepts them ------------------------------------------------------------

label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
digest = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map("sha256:".__add__)
# Free text: anything a person may write; text that looks like a credential is scrubbed on
# purpose before it reaches a stream (tests/faults/test_hostile_input.py), so it is left out here.
text = st.text(max_size=300).filter(lambda t: scrub_text(t) == t)
name = st.text(min_size=1, max_size=200).filter(
    lambda t: t == t.strip() and t.isprintable() and scrub_text(t) == t
)
offsets = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7))])
moment = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=offsets
)
past = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2026, 1, 1), timezones=offsets
)
json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
json_object = st.dictionaries(text, json_value, max_size=5)


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


# The fields each model's strategy draws: a field added to a model must be added here too.
COVERED: dict[type[Event], set[str]] = {}


def event(model: type[Event], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Event]:
    """Events of MODEL with FIELDS drawn from their strategies (None: left to the default), and
    the fields every event carries."""
    common = {"event_id": opt(name), "occurred_at": opt(moment)}
    COVERED[model] = {*common, *fields}

    def build(values: dict[str, Any]) -> Event:
        try:
            return model(**{k: v for k, v in values.items() if v is not None})
        except ValidationError:
            assume(False)  # a combination the model refuses (e.g. a measurement without phase)
            raise

    return st.fixed_dictionaries({**common, **fields}).map(build)


EVENTS: dict[type[Event], st.SearchStrategy[Event]] = {
    CiResult: event(
        CiResult,
        service=label,
        digest=digest,
        image=opt(st.from_regex(r"[a-z0-9.]+(/[a-z0-9_-]+){0,3}", fullmatch=True)),
        commit=opt(name),
        author=opt(name),
        env=opt(label),
        check=opt(name),
        status=st.sampled_from(["success", "failure"]),
        built_at=opt(past),
        url=opt(text),
    ),
    Signal: event(
        Signal,
        kind=st.sampled_from(["approval", "rejection", "check", "promote", "review", "argocd"]),
        service=label,
        digest=digest,
        env=label,
        actor=opt(name),
        check=opt(name),
        status=opt(st.sampled_from(["success", "failure"])),
        reason=opt(text),
        pr=opt(st.integers(min_value=1, max_value=10**9)),
        app=opt(name.filter(lambda t: len(t) <= 253)),
        sync=opt(st.sampled_from(get_args(SyncStatus))),
        health=opt(st.sampled_from(get_args(HealthStatus))),
    ),
    Hold: event(
        Hold,
        kind=st.sampled_from(["hold", "release"]),
        env=label,
        service=opt(label),
        actor=name,
        reason=opt(text),
    ),
    PromotionCommand: event(
        PromotionCommand,
        kind=st.sampled_from(["open", "gates", "merge", "close", "rollback"]),
        promotion_id=name,
        service=label,
        digest=digest,
        source_env=label,
        target_env=label,
        strategy=opt(name),
        auto_merge=st.booleans(),
        evidence=opt(json_object),
        reason=opt(text),
        rollback_of=opt(digest),
        actor=opt(text),
        force=st.booleans(),
        gates_state=opt(st.sampled_from(["pending", "success", "failure"])),
        gates_description=opt(text),
        gates=opt(st.lists(st.dictionaries(text, text, max_size=3), max_size=3)),
        fence=opt(st.integers(min_value=0, max_value=2**53)),
        attempt=opt(st.integers(min_value=0, max_value=1000)),
    ),
    Change: event(
        Change,
        kind=st.sampled_from(
            ["pr_opened", "pr_merged", "pr_closed", "promotion_failed", "verified"]
        ),
        promotion_id=name,
        service=label,
        digest=digest,
        env=label,
        source_env=opt(label),
        pr=opt(st.integers(min_value=-(2**31), max_value=2**31)),
        merge_commit=opt(name),
        reason=opt(text),
        rollback_of=opt(digest),
        actor=opt(text),
    ),
    CanaryMeasurement: event(
        CanaryMeasurement,
        kind=st.sampled_from(["measurement", "promote", "abort"]),
        service=label,
        digest=opt(digest),
        env=label,
        metric=opt(name.filter(lambda t: len(t) <= 100)),
        phase=opt(st.sampled_from(["successful", "failed", "inconclusive", "error"])),
        value=opt(text),
        actor=opt(name),
        reason=opt(text),
    ),
    PreviewEvent: event(
        PreviewEvent,
        kind=st.sampled_from(
            ["opened", "updated", "labeled", "unlabeled", "closed", "extend", "reap"]
        ),
        repo=st.from_regex(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_.-]+){1,2}", fullmatch=True).filter(
            lambda r: all(p not in (".", "..") for p in r.split("/"))
        ),
        pr=st.integers(min_value=1, max_value=10**9),
        team=opt(name.filter(lambda t: len(t) <= 100)),
        labels=opt(st.lists(text, max_size=5)),
        until=opt(moment),
        actor=opt(name),
        reason=opt(text),
    ),
    AuditRecord: event(
        AuditRecord,
        worker=text.filter(bool),
        action=text.filter(bool),
        subject=text.filter(bool),
        outcome=text.filter(bool),
        reason=text.filter(bool),
        caused_by=opt(text),
    ),
    DeadLetter: event(
        DeadLetter,
        stream=text.filter(bool),
        entry_id=text.filter(bool),
        payload=opt(json_object),
        error=text.filter(bool),
        deliveries=st.integers(min_value=0, max_value=10**6),
        worker=text.filter(bool),
    ),
}


def test_every_event_type_and_field_has_a_strategy() -> None:
    assert set(EVENTS) == set(MODELS.values())
    for model in EVENTS:
        assert set(model.model_fields) - {"kind"} <= COVERED[model], model.__name__


# --- the round trip -------------------------------------------------------------------------------


class Wire:
    """A bus, and a worker spec that handles every stream by keeping what it is handed."""

    def __init__(self, redis_url: str) -> None:
        self.settings = Settings(redis_url=redis_url, consumer="contract")
        self.url = redis_url
        self.seen: list[Event] = []
        self.spec = WorkerSpec(
            name="contract",
            handlers={short: lambda e, _ctx: self.seen.append(e) for short in MODELS},
        )

    def round_trip(self, sent: Event) -> Event:
        # A prefix of this example's own: publish-once keys and streams never meet another's.
        settings = self.settings.model_copy(
            update={"stream_prefix": f"rt{os.getpid()}-{next(_examples)}:"}
        )
        bus = Bus(settings, self.url)
        ctx = WorkerContext(name="contract", settings=settings, bus=bus, log=structlog.get_logger())
        short = sent.on_stream
        try:
            bus.ensure_group(short, "contract")
            assert bus.emit(sent) is not None
            [(_, entries)] = bus.redis.xreadgroup("contract", "contract", {bus.stream(short): ">"})
            [(entry_id, raw)] = entries
            self.seen.clear()
            outcome = Dispatcher(self.spec, ctx).process(short, entry_id.decode(), raw, 1)
            assert outcome == "done", bus.redis.xrange(bus.stream("dlq"))
            [received] = self.seen
            assert bus.redis.xpending(bus.stream(short), "contract")["pending"] == 0
            return received
        finally:
            keys = bus.redis.keys(settings.stream_prefix + "*")
            if keys:
                bus.redis.delete(*keys)
            bus.redis.close()


@pytest.fixture(scope="module")
def wire(redis_url: str) -> Wire:
    return Wire(redis_url)


@pytest.mark.parametrize("model", list(EVENTS), ids=lambda m: m.__name__)
def test_a_valid_event_published_and_parsed_again_is_the_same_event(
    wire: Wire, model: type[Event]
) -> None:
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(EVENTS[model])
    def round_trips(sent: Event) -> None:
        received = wire.round_trip(sent)
        assert type(received) is type(sent)
        assert received == sent
        assert received.to_fields() == sent.to_fields()

    round_trips()
