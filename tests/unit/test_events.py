"""The event contracts: what is accepted, what is refused, and how it looks on the wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferry.core.events import (
    AuditRecord,
    Change,
    CiResult,
    DeadLetter,
    InvalidEvent,
    PromotionCommand,
    parse,
    promotion_id,
)

D = "sha256:" + "ab" * 32


def test_flat_string_fields_from_a_plain_xadd_parse() -> None:
    event = parse(
        "ci",
        {
            "kind": "ci",
            "service": "api",
            "digest": D,
            "status": "success",
            "built_at": "2026-11-26T10:00:00Z",
        },
        entry_id="1-0",
    )
    assert isinstance(event, CiResult)
    assert event.service == "api" and event.digest == D and event.env is None
    assert event.event_id == "ci:1-0"  # no producer key: the entry id stands in
    assert event.built_at is not None and event.built_at.year == 2026


def test_round_trip_through_wire_fields_keeps_every_value() -> None:
    cmd = PromotionCommand(
        kind="open",
        promotion_id="p-1",
        service="api",
        digest=D,
        source_env="dev",
        target_env="staging",
        auto_merge=True,
        evidence={"reasons": ["CI green"], "n": 2},
    )
    fields = cmd.to_fields()
    assert all(isinstance(v, str) for v in fields.values())
    assert fields["auto_merge"] == "true" and fields["evidence"].startswith("{")
    assert parse("promotions", fields) == cmd


def test_whole_event_as_one_json_field_is_accepted() -> None:
    event = parse("ci", {"json": f'{{"kind":"ci","service":"web","digest":"{D}"}}'})
    assert event.service == "web"


def test_unknown_fields_are_ignored() -> None:
    event = parse("ci", {"kind": "ci", "service": "api", "digest": D, "shiny_new_field": "x"})
    assert not hasattr(event, "shiny_new_field")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"kind": "ci", "service": "api", "digest": "api:latest"},
            "digest must be sha256:<64 lowercase hex>, got 'api:latest'",
        ),
        (
            {"kind": "ci", "service": "api", "digest": "sha256:" + "AB" * 32},
            "digest must be sha256:<64 lowercase hex>",
        ),
        ({"kind": "ci", "service": "api", "digest": "sha256:abc"}, "got 'sha256:abc'"),
        (
            {"kind": "ci", "service": "../etc", "digest": D},
            "service must be a DNS label (lower-case letters, digits and '-', at most 63 "
            "characters), got '../etc'",
        ),
        ({"kind": "ci", "service": "API", "digest": D}, "service must be a DNS label"),
        ({"kind": "ci", "service": "a" * 64, "digest": D}, "service must be a DNS label"),
        ({"kind": "ci", "service": "api", "digest": D, "env": "prod/x"}, "env must be a DNS label"),
        ({"kind": "ci", "digest": D}, "field 'service' is required"),
        ({"service": "api", "digest": D}, "field 'kind' is required"),
        (
            {"kind": "ci", "service": "api", "digest": D, "status": "green"},
            "field 'status': Input should be 'success' or 'failure', got 'green'",
        ),
        (
            {"kind": "ci", "service": "api", "digest": D, "image": "reg/api:1.2"},
            "image must be a repository without tag or digest",
        ),
        ({"json": "{not json"}, "field 'json' is not valid JSON"),
        ({"kind": "approval", "service": "api", "digest": D}, "field 'kind'"),
    ],
)
def test_refusals_name_the_field_and_the_value(fields: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        parse("ci", fields)
    assert message in str(err.value)


def test_dead_letter_carries_stream_and_payload_on_the_wire() -> None:
    letter = DeadLetter(
        stream="ferry:ci",
        entry_id="1-0",
        payload={"kind": "ci"},
        error="bad",
        deliveries=1,
        worker="gate-evaluator",
    )
    fields = letter.to_fields()
    assert fields["stream"] == "ferry:ci" and fields["payload"] == '{"kind":"ci"}'
    assert parse("dlq", fields) == letter


def test_promotion_id_is_stable_and_distinct_per_target() -> None:
    assert promotion_id("api", D, "dev") == promotion_id("api", D, "dev")
    assert promotion_id("api", D, "dev") != promotion_id("api", D, "staging")
    assert promotion_id("api", D, "dev") != promotion_id("web", D, "dev")


@given(
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True),
)
def test_any_valid_change_survives_the_wire(hexes: str, service: str) -> None:
    change = Change(
        kind="pr_merged",
        promotion_id="p-x",
        service=service,
        digest="sha256:" + hexes,
        env="dev",
        pr=7,
        merge_commit="abc",
    )
    assert parse("changes", change.to_fields()) == change


def ci_with(built_at: str) -> dict[str, str]:
    return {"kind": "ci", "service": "api", "digest": D, "built_at": built_at}


def test_a_build_time_in_the_future_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidEvent, match=r"built_at 2027-01-01T00:00:00\+00:00 is \d+ days in"):
        parse("ci", ci_with("2027-01-01T00:00:00Z"))
    ahead = (datetime.now(UTC) + timedelta(minutes=3)).isoformat()
    assert parse("ci", ci_with(ahead)).built_at is not None  # clocks drift a little


def test_a_build_time_without_a_timezone_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="built_at 2026-01-01T10:00:00 has no timezone"):
        parse("ci", ci_with("2026-01-01T10:00:00"))


def test_a_build_time_that_is_not_a_time_says_what_one_looks_like() -> None:
    with pytest.raises(InvalidEvent) as e:
        parse("ci", ci_with("yesterday"))
    assert str(e.value) == (
        "built_at must be an ISO 8601 time with a timezone (e.g. 2026-11-27T09:12:00Z or "
        "2026-11-27T10:12:00+01:00), got 'yesterday'"
    )


@pytest.mark.parametrize("reason", ["", " ", "\n"])
def test_a_dead_letter_without_a_reason_still_reads_back(reason: str) -> None:
    # A blank field is an absent one on the wire: the reason must never be blank.
    letter = DeadLetter(stream="ferry:ci", entry_id="1-0", error=reason, deliveries=1, worker="w")
    assert letter.error == "no reason given"
    assert parse("dlq", letter.to_fields()) == letter


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(
    fields=st.tuples(_TEXT, _TEXT, _TEXT, _TEXT, _TEXT, st.none() | _TEXT),
    at=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))]))
    | st.datetimes(),
)
def test_an_audit_record_built_without_the_model_is_the_models_byte_for_byte(
    fields: tuple[str, str, str, str, str, str | None], at: datetime
) -> None:
    """Bus.audit builds a decision's record without pydantic (AuditRecord.wire_fields): the same
    fields as the model's, or the model's refusal."""
    names = ("worker", "action", "subject", "outcome", "reason", "caused_by")
    kwargs: dict[str, Any] = dict(zip(names, fields, strict=True))
    try:
        expected = AuditRecord(**kwargs, event_id="e1", occurred_at=at).to_fields()
    except ValueError as e:
        with pytest.raises(type(e)):
            AuditRecord.wire_fields(*fields, event_id="e1", occurred_at=at)
        return
    assert AuditRecord.wire_fields(*fields, event_id="e1", occurred_at=at) == expected


def test_an_audit_record_built_without_the_model_reads_back() -> None:
    fields = AuditRecord.wire_fields("gate-evaluator", "promote", "api", "skip", "up to date", "c1")
    record = parse("audit", fields)
    assert isinstance(record, AuditRecord)
    assert (record.outcome, record.caused_by) == ("skip", "c1")
    assert record.occurred_at.tzinfo is not None
    assert record.to_fields() == fields
