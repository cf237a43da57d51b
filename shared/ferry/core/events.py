"""Ferry's event contracts: the one definition of every message on every stream (docs/events.md).

Wire format: one Redis stream entry per event, with one field per attribute. Strings go as they
are; lists and mappings as JSON; absent values are left out. A person reads an entry with
`redis-cli XRANGE`, and a producer in any language publishes with a plain
`XADD ferry:ci * kind ci service api digest sha256:... status success`. A producer may instead
send the whole event as one JSON object in a single field named `json`.
Unknown fields are ignored, so a newer producer never breaks an older worker.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ferry.core.deployments import HealthStatus, SyncStatus
from ferry.core.errors import Rejected, one_line, quote
from ferry.core.names import DIGEST, DNS_LABEL, NAME_MAX, check_digest, check_label, check_name


def now_utc() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return uuid.uuid4().hex


def promotion_id(service: str, digest: str, target_env: str) -> str:
    """The idempotency key of a promotion: the same digest to the same place is one promotion."""
    return "p-" + hashlib.sha256(f"{service}|{digest}|{target_env}".encode()).hexdigest()[:16]


def pr_key(promotion_id: str, attempt: int = 0) -> str:
    """The key a promotion's pull request is found by on the forge: the promotion id, and for a
    promotion a person asked for again (`ferry promote`, after its pull request was closed or its
    merge reverted) the attempt, so that the new request gets a pull request of its own."""
    return promotion_id if not attempt else f"{promotion_id}.{attempt}"


def promotion_of_key(key: str) -> str:
    """The promotion id a pull request's key stands for (see `pr_key`)."""
    return key.split(".", 1)[0]


# How far ahead of Ferry's clock a build time may be: clocks drift, builds do not come from the
# future. A time further ahead would rank the build above every real later one.
BUILD_TIME_SKEW = timedelta(minutes=5)
_BUILD_TIME_EXAMPLE = "e.g. 2026-11-27T09:12:00Z or 2026-11-27T10:12:00+01:00"


def build_time(value: Any, now: datetime | None = None) -> Any:
    """A build time as CiResult takes it: ISO 8601 with a timezone, at most BUILD_TIME_SKEW after
    NOW. Other types are left to pydantic."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"built_at must be an ISO 8601 time with a timezone ({_BUILD_TIME_EXAMPLE}), "
                f"got {quote(value)}"
            ) from None
    if not isinstance(value, datetime):
        return value
    if value.tzinfo is None:
        raise ValueError(
            f"built_at {value.isoformat()} has no timezone: a build time must say which "
            f"({_BUILD_TIME_EXAMPLE})"
        )
    ahead = value - (now or now_utc())
    if ahead > BUILD_TIME_SKEW:
        raise ValueError(
            f"built_at {value.isoformat()} is {_ahead(ahead)} in the future: send when the "
            "image was built (a later time would rank it above every real newer build)"
        )
    return value


def _ahead(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} minutes"
    hours = minutes // 60
    return f"{hours} hours" if hours < 48 else f"{hours // 24} days"


class InvalidEvent(Rejected):
    """An entry that can never be processed: the message says what to fix."""


class Event(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    on_stream: ClassVar[str] = ""
    # Fields carried as JSON text on the wire (lists and mappings).
    json_fields: ClassVar[frozenset[str]] = frozenset()

    kind: str
    event_id: Name = Field(default_factory=new_event_id)
    occurred_at: datetime = Field(default_factory=now_utc)

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            if value == "":
                continue  # an empty field is an absent one
            if key in cls.json_fields and isinstance(value, str):
                value = _load_json(key, value, ValueError)
            out[key] = value
        return out

    @field_validator("occurred_at", mode="after")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def to_fields(self) -> dict[str, str]:
        """The flat string fields of this event as they go on a stream."""
        fields: dict[str, str] = {}
        for key, value in self.model_dump(mode="json", exclude_none=True).items():
            if key in self.json_fields:
                fields[key] = json.dumps(value, sort_keys=True, separators=(",", ":"))
            elif isinstance(value, bool):
                fields[key] = "true" if value else "false"
            else:
                fields[key] = str(value)
        return fields


def _missing(event: BaseModel, *names: str) -> str:
    """The fields of NAMES that EVENT lacks, quoted and joined ("" when none is missing)."""
    return ", ".join(repr(n) for n in names if getattr(event, n) is None)


def _as_label(value: str, info: ValidationInfo) -> str:
    return check_label(value, info.field_name or "name")


def _as_digest(value: str, info: ValidationInfo) -> str:
    return check_digest(value, info.field_name or "digest")


def _as_name(value: str, info: ValidationInfo) -> str:
    return check_name(value, info.field_name or "name")


# A service or environment name: it reaches paths and branch names, so only DNS labels pass.
# (The JSON schemas, for the AsyncAPI document, say what the validators check.)
Label = Annotated[
    str,
    AfterValidator(_as_label),
    WithJsonSchema(
        {"type": "string", "pattern": f"^{DNS_LABEL.pattern}$", "maxLength": 63},
    ),
]
# An immutable image digest: build once, promote the digest.
Digest = Annotated[
    str,
    AfterValidator(_as_digest),
    WithJsonSchema({"type": "string", "pattern": f"^{DIGEST.pattern}$"}),
]
# Any other name (a person, a check, an image, an id): one line, no surrounding whitespace.
Name = Annotated[
    str,
    AfterValidator(_as_name),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": NAME_MAX,
            "description": "one line, no surrounding whitespace or invisible characters",
        }
    ),
]


class _Subject(Event):
    """Events about one service (and usually one digest)."""

    service: Label


class CiResult(_Subject):
    """A CI system's result: a build (no env) or a check run against a digest live in env."""

    on_stream: ClassVar[str] = "ci"
    kind: Literal["ci"] = "ci"
    image: Name | None = None
    digest: Digest
    commit: Name | None = None
    author: Name | None = None
    env: Label | None = None
    check: Name | None = None
    status: Literal["success", "failure"] = "success"
    built_at: datetime | None = None
    url: str | None = None

    @field_validator("built_at", mode="before")
    @classmethod
    def _built_at(cls, value: Any) -> Any:
        return build_time(value)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and ("@" in value or ":" in value.rsplit("/", 1)[-1]):
            raise ValueError(
                f"image must be a repository without tag or digest "
                f"(e.g. registry.example.com/shop/api), got {quote(value)}"
            )
        return value


class Signal(_Subject):
    """A person's or a job's word about a digest in an environment: an approval, a rejection, a
    check's result, `promote`, a person asking for the digest there again (after its pull
    request was closed, its merge reverted, or it was rolled back), or `review`: the reviews of
    the promotion's pull request PR changed (the ingress publishes it; the reviews themselves are
    read from the forge, never taken from the stream), or `argocd`: Argo CD reports that its
    application APP, which runs SERVICE in ENV, runs DIGEST, with its SYNC status and HEALTH
    (the ingress publishes it from Argo CD's notifications; see `live_when`)."""

    on_stream: ClassVar[str] = "signals"
    kind: Literal["approval", "rejection", "check", "promote", "review", "argocd"]
    digest: Digest
    env: Label
    actor: Name | None = None
    check: Name | None = None
    status: Literal["success", "failure"] | None = None
    reason: str | None = None
    pr: int | None = Field(default=None, ge=1)
    app: Name | None = Field(default=None, max_length=253)
    sync: SyncStatus | None = None
    health: HealthStatus | None = None

    @model_validator(mode="after")
    def _argocd(self) -> Signal:
        if self.kind == "argocd" and (missing := _missing(self, "app", "sync", "health")):
            raise ValueError(
                f"an argocd signal needs {missing}: the application, its sync status and its "
                "health as Argo CD reports them"
            )
        return self


class Hold(Event):
    """A person stops promotions into ENV (of SERVICE, or of every service when absent) until
    they are released: a gate like any other, shown by `ferry explain` and `ferry status`."""

    on_stream: ClassVar[str] = "holds"
    kind: Literal["hold", "release"]
    env: Label
    service: Label | None = None  # None: every service
    actor: Name
    reason: str | None = None

    @property
    def scope(self) -> str:
        return f"{self.service or 'every service'} in {self.env}"


class PromotionCommand(_Subject):
    """gate-evaluator's instruction to pr-writer: open (and with auto_merge, merge) a promotion's
    pull request, set its gate status (`gates`), merge it, close it, or roll back."""

    on_stream: ClassVar[str] = "promotions"
    json_fields: ClassVar[frozenset[str]] = frozenset({"evidence", "gates"})
    kind: Literal["open", "gates", "merge", "close", "rollback"]
    promotion_id: Name
    digest: Digest
    source_env: Label  # an environment, or "build"
    target_env: Label
    strategy: Name = "direct"
    auto_merge: bool = False
    evidence: dict[str, Any] = Field(default_factory=dict)
    reason: str | None = None
    # A rollback: the digest it takes out of target_env (digest is the one it pins back),
    # who asked, and whether they override an active deny window.
    rollback_of: Digest | None = None
    actor: str | None = None
    force: bool = False
    # The `ferry/gates` commit status and each gate's line in the pull request's body.
    gates_state: Literal["pending", "success", "failure"] | None = None
    gates_description: str | None = None
    gates: list[dict[str, str]] = Field(default_factory=list)
    # The order of gate-evaluator's choices for (service, target): pr-writer leaves alone a
    # command that a later choice (a higher fence) has replaced. 0: not fenced.
    fence: int = 0
    # How many times a person asked for this promotion again (`ferry promote`): each request
    # gets a pull request of its own on the forge (see pr_key).
    attempt: int = 0

    @property
    def pr_key(self) -> str:
        """The key this command's pull request is found by on the forge."""
        return pr_key(self.promotion_id, self.attempt)

    @property
    def subject(self) -> str:
        """What moves where, as logs and audit records name it."""
        return f"{self.service}@{self.digest} -> {self.target_env}"

    @property
    def once_key(self) -> str | None:
        """Each promotion is opened, merged and closed once; gate updates may repeat."""
        return None if self.kind == "gates" else self.key_for(self.promotion_id, self.kind)

    @staticmethod
    def key_for(promotion_id: str, kind: str) -> str:
        """The publish-once key of the KIND command of a promotion."""
        return f"promotion:{promotion_id}:{kind}"

    def change(self, kind: str, pr: int | None = None, **extra: Any) -> Change:
        """What happened to the promotion this command asked for."""
        return Change.about(
            kind,
            promotion_id=self.promotion_id,
            service=self.service,
            digest=self.digest,
            env=self.target_env,
            source_env=self.source_env,
            pr=pr,
            **extra,
        )


class Change(_Subject):
    """What happened in the GitOps repository or on the forge."""

    on_stream: ClassVar[str] = "changes"
    kind: Literal["pr_opened", "pr_merged", "pr_closed", "promotion_failed", "verified"]
    promotion_id: Name
    digest: Digest
    env: Label
    source_env: Label | None = None
    pr: int | None = None
    merge_commit: Name | None = None
    reason: str | None = None
    rollback_of: Digest | None = None  # set on the changes of a rollback
    actor: str | None = None  # who did it, when a person did (a merge or close by hand)

    @property
    def once_key(self) -> str | None:
        """A PR is opened, merged and closed once; a failure is reported each time it happens."""
        if self.kind == "promotion_failed":
            return None
        return self.key_for(self.promotion_id, self.kind)

    @staticmethod
    def key_for(promotion_id: str, kind: str) -> str:
        """The publish-once key of the KIND change of a promotion."""
        return f"change:{promotion_id}:{kind}"

    @classmethod
    def about(cls, kind: str, *, promotion_id: str, **fields: Any) -> Change:
        """A change of KIND to a promotion; all but failures carry the promotion's stable id, so
        that reporting one twice (a redelivery, a person and a worker) publishes it once."""
        once = kind != "promotion_failed"
        return cls.model_validate(
            {
                "kind": kind,
                **({"event_id": f"{promotion_id}:{kind}"} if once else {}),
                "promotion_id": promotion_id,
                **{k: v for k, v in fields.items() if v is not None},
            }
        )


class CanaryMeasurement(_Subject):
    """What the canary-watcher judges: a `measurement` of one metric of the canary of DIGEST in
    ENV, or a person's word on a paused canary (`promote`: it is good; `abort`: roll it back)."""

    on_stream: ClassVar[str] = "canary"
    kind: Literal["measurement", "promote", "abort"] = "measurement"
    digest: Digest | None = None
    env: Label
    metric: Name | None = Field(default=None, max_length=100)
    phase: Literal["successful", "failed", "inconclusive", "error"] | None = None
    value: str | None = Field(default=None, max_length=1000)
    actor: Name | None = None
    reason: str | None = None

    @model_validator(mode="after")
    def _needs(self) -> CanaryMeasurement:
        if self.kind == "measurement":
            if missing := _missing(self, "digest", "metric", "phase"):
                raise ValueError(f"a measurement needs {missing}")
        elif not self.actor:
            raise ValueError(f"a canary {self.kind} needs 'actor': who decides")
        return self


class PreviewEvent(Event):
    """What happened to an application pull request that may carry a preview environment.

    `labels` is the PR's whole label set on `opened` (and on `updated` when given), the labels
    added on `labeled` and those removed on `unlabeled`. `until` is an absolute end for the
    preview; on `extend` it is the end asked for (absent: one more TTL from now). `reap` is a
    person's request to reap the preview now (`ferry previews reap`), with `actor` and `reason`."""

    on_stream: ClassVar[str] = "previews"
    json_fields: ClassVar[frozenset[str]] = frozenset({"labels"})
    kind: Literal["opened", "updated", "labeled", "unlabeled", "closed", "extend", "reap"]
    repo: Name
    pr: int = Field(ge=1)
    team: Name | None = Field(default=None, max_length=100)
    labels: list[str] = Field(default_factory=list)
    until: datetime | None = None
    actor: Name | None = None
    reason: str | None = None

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        parts = value.split("/")
        if len(parts) < 2 or any(not p or p in (".", "..") or p.strip() != p for p in parts):
            raise ValueError(f"repo must be OWNER/NAME (e.g. shop/web), got {value!r}")
        return value

    @field_validator("until", mode="after")
    @classmethod
    def _until_utc(cls, value: datetime | None) -> datetime | None:
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)

    @property
    def subject(self) -> str:
        """The pull request, as logs and audit records name it."""
        return f"{self.repo}#{self.pr}"


class AuditRecord(Event):
    """One decision of one worker, in words."""

    on_stream: ClassVar[str] = "audit"
    kind: Literal["decision"] = "decision"
    worker: str
    action: str
    subject: str
    outcome: str
    reason: str
    caused_by: str | None = None

    @classmethod
    def wire_fields(
        cls,
        worker: str,
        action: str,
        subject: str,
        outcome: str,
        reason: str,
        caused_by: str | None = None,
        *,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> dict[str, str]:
        """`AuditRecord(...).to_fields()` built without the model's validation, for a worker's
        every decision; the same fields, byte for byte (tests/unit/test_events.py). A record
        the model would refuse (an empty field besides CAUSED_BY) is built by the model, which
        refuses it; one at a time other than UTC's is too."""
        utc = occurred_at is None or occurred_at.tzinfo is UTC
        if not (worker and action and subject and outcome and reason and utc):
            given: dict[str, Any] = {"event_id": event_id, "occurred_at": occurred_at}
            record = cls(
                worker=worker,
                action=action,
                subject=subject,
                outcome=outcome,
                reason=reason,
                caused_by=caused_by,
                **{k: v for k, v in given.items() if v is not None},
            )
            return record.to_fields()
        at = occurred_at or now_utc()
        fields = {
            "kind": "decision",
            "event_id": event_id if event_id is not None else new_event_id(),
            "occurred_at": at.isoformat()[:-6] + "Z",  # +00:00 as pydantic writes it
            "worker": worker,
            "action": action,
            "subject": subject,
            "outcome": outcome,
            "reason": reason,
        }
        if caused_by:
            fields["caused_by"] = caused_by
        return fields


NO_REASON = "no reason given"


class DeadLetter(Event):
    """An entry a worker could not process, with the sentence that says why."""

    on_stream: ClassVar[str] = "dlq"
    json_fields: ClassVar[frozenset[str]] = frozenset({"payload"})
    kind: Literal["dead_letter"] = "dead_letter"
    stream: str
    entry_id: str
    payload: dict[str, Any] = Field(default_factory=dict)
    # Never blank: a blank field is an absent one on the wire, and a dead letter must read back.
    error: str = NO_REASON
    deliveries: int
    worker: str

    @field_validator("error", mode="before")
    @classmethod
    def _one_line(cls, value: Any) -> Any:
        # A reason is read in `ferry dlq ls`: one line, bounded; the payload keeps the whole entry.
        return (one_line(value) or NO_REASON) if isinstance(value, str) else value


MODELS: dict[str, type[Event]] = {
    m.on_stream: m
    for m in (
        CiResult,
        Signal,
        PromotionCommand,
        Change,
        Hold,
        CanaryMeasurement,
        PreviewEvent,
        AuditRecord,
        DeadLetter,
    )
}


def describe(error: ValidationError) -> str:
    """One sentence a person can act on, from a pydantic ValidationError."""
    parts = []
    for err in error.errors():
        field = ".".join(str(p) for p in err["loc"]) or "entry"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            parts.append(f"field {field!r} is required")
        elif err["type"] == "literal_error":
            parts.append(f"field {field!r}: {msg}, got {quote(err.get('input'))}")
        elif msg.startswith(field):
            parts.append(msg)
        else:
            parts.append(f"field {field!r}: {msg}")
    return "; ".join(parts)


def decode_fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    """Stream entry fields as str -> str (redis-py hands out bytes); see decode_entry."""
    return decode_entry(raw)[0]


def decode_entry(raw: Mapping[Any, Any]) -> tuple[dict[str, str], list[bytes]]:
    """Stream entry fields as str -> str, and the names (as sent) of the fields whose name or
    value is not UTF-8. Such an entry is kept readable and reversible rather than lost: all of
    its names and values are written with backslash escapes (byte 0xff as \\xff, a backslash as
    \\\\)."""
    items = [(_as_bytes(k), _as_bytes(v)) for k, v in raw.items()]
    try:
        return {k.decode(): v.decode() for k, v in items}, []
    except UnicodeDecodeError:
        pass
    fields, not_text = {}, []
    for k, v in items:
        fields[_escaped(k)] = _escaped(v)
        if not (_is_utf8(k) and _is_utf8(v)):
            not_text.append(k)
    return fields, not_text


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def _escaped(value: bytes) -> str:
    return value.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def _load_json(field: str, text: str, error: type[Exception]) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(
            f"field {field!r} is not valid JSON ({e.msg} at char {e.pos}): "
            "send one JSON object, or one field per attribute"
            if field == "json"
            else f"field {field!r} must be JSON ({e.msg} at char {e.pos})"
        ) from e
    except RecursionError as e:
        raise error(f"field {field!r} is JSON nested too deeply to read: flatten it") from e


def parse(
    stream: str,
    fields: Mapping[str, str],
    *,
    entry_id: str | None = None,
    not_text: Collection[bytes] = (),
) -> Event:
    """Validate the fields of one entry of STREAM (short name, e.g. "ci") into its event model.
    NOT_TEXT names fields that arrived as bytes which are not UTF-8 (see decode_entry).

    Raises InvalidEvent with a one-line sentence that names the field and quotes at most a short
    prefix of the value, whatever the entry holds.
    """
    try:
        return _parse(stream, fields, entry_id, not_text)
    except InvalidEvent:
        raise
    except Exception as e:  # noqa: BLE001 - hostile input must end as a sentence, never a crash
        raise InvalidEvent(one_line(f"entry cannot be read: {type(e).__name__}: {e}")) from e


def _parse(
    stream: str, fields: Mapping[str, str], entry_id: str | None, not_text: Collection[bytes]
) -> Event:
    model = MODELS.get(stream)
    if model is None:
        raise InvalidEvent(f"no event belongs on stream {stream!r}")
    if not_text:
        names = ", ".join(quote(name) for name in list(not_text)[:3])
        raise InvalidEvent(
            f"field {names} is not UTF-8 text: send names and values as UTF-8 (the dead "
            "letter's payload keeps the entry with backslash escapes: \\xff is byte 0xff, "
            "\\\\ a backslash)"
        )
    data: dict[str, Any] = dict(fields)
    if set(data) == {"json"} or ("json" in data and "kind" not in data):
        loaded = _load_json("json", data["json"], InvalidEvent)
        if not isinstance(loaded, dict):
            raise InvalidEvent("field 'json' must hold a JSON object")
        data = loaded
    if "kind" not in data:
        raise InvalidEvent(f"field 'kind' is required (on {stream!r}: {_kinds(model)})")
    if "event_id" not in data and entry_id:
        # No producer key: the entry id is the next best stable identity for redeliveries.
        data["event_id"] = f"{stream}:{entry_id}"
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InvalidEvent(one_line(describe(e))) from e


def _kinds(model: type[Event]) -> str:
    ann = model.model_fields["kind"].annotation
    args = getattr(ann, "__args__", ())
    return "kind is one of " + ", ".join(repr(a) for a in args)
