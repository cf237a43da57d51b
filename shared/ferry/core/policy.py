"""The promotion policy: `ferry.yaml` on the GitOps repository's `main`, as pydantic models.

The keys are a contract (the scaffolded ferry.yaml and the README describe them). Unknown keys
are accepted and ignored so that a newer ferry.yaml does not break an older ferry. Everything
that can be checked without the outside world is checked at load time, and every problem is
reported as one readable line.

Schema (defaults in brackets)::

    layout:
      values_path: str ["envs/{env}/{service}/values.yaml"]  # must use {env} and {service}
      digest_key: str ["image.digest"]                        # dotted key in the values file
    environments:                       # in promotion order; names are DNS labels
      <env>:
        promote_from: "build" | <env>   # required; no cycles
        auto_merge: bool [false]
        strategy: "direct" | "canary" ["direct"]
        live_when: "merged" | "synced" | "healthy" ["merged"]  # when a digest counts as live
                                        # here: its PR merged, or Argo CD reports it synced
                                        # (and healthy): the soak starts, the next env follows
        gates:
          ci: {checks: [str]}           # present = CI gate; no checks = any green CI result
          approval: {min_approvals: int [1], approvers: [user | "team:<name>"],
                     author_can_approve: bool [false], expires_after: duration [never],
                     via: [cli | forge] [cli, forge]}  # read, not enforced yet
          soak: {min_duration: duration [0s], checks: [str]}
          windows: [{allow | deny: cron (5 fields), duration: duration, timezone: str [UTC]}]
        canary: {count: 5, failure_limit: 0, inconclusive_limit: 0,
                 consecutive_error_limit: 4, progress_deadline: 30m,
                 no_data: successful | failed | inconclusive [inconclusive], interval: 1m,
                 metrics: [{name: str, prometheus: {query: PromQL, address: url},
                            success_condition: str, failure_condition: str, interval: duration,
                            count, failure_limit, inconclusive_limit, consecutive_error_limit}]}
    approvers: {teams: {<team>: [user]}}
    previews: {label: preview, required_labels: [], excluded_labels: [], ttl: 48h,
               ttl_from: last_activity | created, max_ttl: 7d, quota_per_team: 5 (null: none),
               evict: never | oldest | least_active, warn_before: 2h (0s: none),
               dry_run: false}
    notifications:                      # webhooks the notifier posts to (docs/notifications.md)
      webhooks: [{name: label, kind: slack | json [json], url_env: ENV_VAR,
                  secret_env: ENV_VAR (json: HMAC-SHA256 signature), events: [needs_approval,
                  rejected, failed, rolled_back, dead_letter] [all], environments: [env] [all]}]
    services:                           # optional per-service overrides, deep-merged
      <service>: {environments: {<env>: <any subset of an environment>}}

Durations are strings such as 90s, 30m, 2h, 14d or 1h30m.
"""

from __future__ import annotations

import copy
import re
import string
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import PlainValidator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from .conditions import compile_condition
from .deployments import LiveWhen
from .names import check_label

BUILD = "build"
DEFAULT_VALUES_PATH = "envs/{env}/{service}/values.yaml"
DEFAULT_DIGEST_KEY = "image.digest"


class PolicyError(ValueError):
    """ferry.yaml is invalid, or a question about it has no answer (unknown environment)."""


# --------------------------------------------------------------------------- durations

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """Parse '90s', '30m', '2h', '14d', '1h30m' (units d, h, m, s in that order)."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        raise ValueError(f"duration must look like 90s, 30m, 2h, 14d or 1h30m, got {text!r}")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse of parse_duration: timedelta(hours=1, minutes=30) -> '1h30m'."""
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _to_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value if isinstance(value, str) else repr(value))


Duration = Annotated[
    timedelta,
    PlainValidator(_to_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class CiGate(_Model):
    """CI must be green for the digest in the source environment."""

    checks: list[str] = Field(default_factory=list)  # empty: any green CI result counts


class ApprovalGate(_Model):
    min_approvals: int = Field(default=1, ge=0)
    approvers: list[str] = Field(default_factory=list)  # user names or "team:<name>"
    author_can_approve: bool = False
    # An approval older than this no longer counts (absent: approvals never expire).
    expires_after: Duration | None = None
    # Where approvals may come from: `ferry approve` (cli) and reviews on the PR (forge).
    via: tuple[Literal["cli", "forge"], ...] = ("cli", "forge")


class SoakGate(_Model):
    min_duration: Duration = timedelta(0)
    checks: list[str] = Field(default_factory=list)


class Window(_Model):
    """A sync window: `allow` or `deny` is a 5-field cron expression opening it."""

    allow: str | None = None
    deny: str | None = None
    duration: Duration
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _one_kind(self) -> Window:
        if (self.allow is None) == (self.deny is None):
            raise ValueError("a window needs exactly one of 'allow' or 'deny'")
        cron = self.cron
        if len(cron.split()) != 5:
            raise ValueError(f"{self.kind}: cron expression must have 5 fields, got {cron!r}")
        return self

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}") from None
        return value

    @property
    def kind(self) -> Literal["allow", "deny"]:
        return "allow" if self.allow is not None else "deny"

    @property
    def cron(self) -> str:
        return self.allow if self.allow is not None else (self.deny or "")


class Gates(_Model):
    ci: CiGate | None = None
    approval: ApprovalGate | None = None
    soak: SoakGate | None = None
    windows: list[Window] = Field(default_factory=list)


class PrometheusQuery(_Model):
    """The built-in Prometheus provider: QUERY (PromQL; {{service}}, {{env}} and {{digest}} are
    filled in) run against ADDRESS (default: FERRY_PROMETHEUS_URL)."""

    query: str = Field(min_length=1)
    address: str | None = None


class CanaryMetric(_Model):
    """One metric of the canary analysis. The limits default to the canary block's."""

    name: str = Field(min_length=1, max_length=100)
    prometheus: PrometheusQuery | None = None
    success_condition: str | None = None
    failure_condition: str | None = None
    interval: Duration | None = None
    count: int | None = Field(default=None, ge=1)
    failure_limit: int | None = Field(default=None, ge=0)
    inconclusive_limit: int | None = Field(default=None, ge=0)
    consecutive_error_limit: int | None = Field(default=None, ge=0)

    @field_validator("success_condition", "failure_condition")
    @classmethod
    def _condition(cls, value: str | None) -> str | None:
        if value is not None:
            compile_condition(value)  # refused at load time, not when the canary runs
        return value


class Canary(_Model):
    count: int = Field(default=5, ge=1)
    failure_limit: int = Field(default=0, ge=0)
    inconclusive_limit: int = Field(default=0, ge=0)
    consecutive_error_limit: int = Field(default=4, ge=0)
    progress_deadline: Duration = timedelta(minutes=30)
    # The run's phase when no measurement arrives within progress_deadline.
    no_data: Literal["successful", "failed", "inconclusive"] = "inconclusive"
    # How often the built-in provider runs each metric's query (a metric may set its own).
    interval: Duration = timedelta(minutes=1)
    metrics: list[CanaryMetric] = Field(default_factory=list)

    @field_validator("metrics")
    @classmethod
    def _unique(cls, value: list[CanaryMetric]) -> list[CanaryMetric]:
        names = [m.name for m in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"metric names must be unique, got {', '.join(twice)} twice")
        return value

    @field_validator("interval", "progress_deadline")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value


class EnvironmentPolicy(_Model):
    promote_from: str
    auto_merge: bool = False
    strategy: Literal["direct", "canary"] = "direct"
    # When a digest counts as live in this environment (its soak starts, the environments
    # promoted from here may follow): its pull request merged, or Argo CD reports the
    # application synced to it (and healthy) - ferry.core.deployments.
    live_when: LiveWhen = "merged"
    gates: Gates = Field(default_factory=Gates)
    canary: Canary = Field(default_factory=Canary)


class Layout(_Model):
    values_path: str = DEFAULT_VALUES_PATH
    digest_key: str = DEFAULT_DIGEST_KEY

    @field_validator("values_path")
    @classmethod
    def _template(cls, value: str) -> str:
        fields = set()
        try:
            for _, name, spec, conv in string.Formatter().parse(value):
                if name is not None:
                    if name not in ("env", "service") or spec or conv:
                        raise ValueError(
                            f"only {{env}} and {{service}} may be used, got {{{name}}}"
                        )
                    fields.add(name)
        except ValueError as exc:
            raise ValueError(f"bad template {value!r}: {exc}") from None
        if fields != {"env", "service"}:
            raise ValueError(f"must contain both {{env}} and {{service}}, got {value!r}")
        _check_relative(value.format(env="env", service="service"), "values_path")
        return value

    @field_validator("digest_key")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if not value or any(not part.strip() for part in value.split(".")):
            raise ValueError(f"must be a dotted key such as 'image.digest', got {value!r}")
        return value


class Approvers(_Model):
    teams: dict[str, list[str]] = Field(default_factory=dict)


NoticeKind = Literal["needs_approval", "rejected", "failed", "rolled_back", "dead_letter"]
NOTICE_KINDS: tuple[NoticeKind, ...] = (
    "needs_approval",
    "rejected",
    "failed",
    "rolled_back",
    "dead_letter",
)


class Webhook(_Model):
    """One receiver of notices. The URL is named by an environment variable, never written in
    ferry.yaml: a Slack incoming-webhook URL is itself a secret."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    kind: Literal["slack", "json"] = "json"
    url_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    secret_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    events: list[NoticeKind] = Field(default_factory=lambda: list(NOTICE_KINDS))
    environments: list[str] = Field(default_factory=list)  # empty: every environment


class Notifications(_Model):
    webhooks: list[Webhook] = Field(default_factory=list)


class Previews(_Model):
    """Per-PR preview environments: how long they live and how many a team may have."""

    label: str = Field(default="preview", min_length=1)
    required_labels: list[str] = Field(default_factory=list)  # needed besides `label`
    excluded_labels: list[str] = Field(default_factory=list)  # any of these: not a preview
    ttl: Duration = timedelta(hours=48)
    ttl_from: Literal["last_activity", "created"] = "last_activity"
    max_ttl: Duration = timedelta(days=7)
    quota_per_team: int | None = Field(default=5, ge=0)  # null: no quota
    # Beyond the quota the newcomer is refused, unless this names which preview makes room.
    evict: Literal["never", "oldest", "least_active"] = "never"
    warn_before: Duration = timedelta(hours=2)  # 0s: no warning
    dry_run: bool = False  # report what would be done (ferry previews ls, audit); act on nothing

    @model_validator(mode="after")
    def _consistent(self) -> Previews:
        if self.ttl <= timedelta(0):
            raise ValueError("ttl must be longer than 0s")
        if self.max_ttl < self.ttl:
            raise ValueError(
                f"max_ttl ({format_duration(self.max_ttl)}) must not be shorter than ttl "
                f"({format_duration(self.ttl)})"
            )
        clash = set(self.excluded_labels) & {self.label, *self.required_labels}
        if clash:
            raise ValueError(f"excluded_labels must not name a required label, got {sorted(clash)}")
        return self


class ServiceOverrides(_Model):
    environments: dict[str, dict[str, Any]] = Field(default_factory=dict)


def _check_relative(path: str, what: str) -> str:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\\" in path or "\n" in path:
        raise ValueError(f"{what} must be a relative path without '..', got {path!r}")
    return path


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class Policy(_Model):
    layout: Layout = Field(default_factory=Layout)
    environments: dict[str, EnvironmentPolicy]
    approvers: Approvers = Field(default_factory=Approvers)
    previews: Previews = Field(default_factory=Previews)
    notifications: Notifications = Field(default_factory=Notifications)
    services: dict[str, ServiceOverrides] = Field(default_factory=dict)

    # The environments as written, so that service overrides merge over the source, not over
    # defaults that pydantic filled in.
    _raw_envs: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)
    _merged: dict[tuple[str, str], EnvironmentPolicy] = PrivateAttr(default_factory=dict)
    _targets: dict[tuple[str, str | None], tuple[str, ...]] = PrivateAttr(default_factory=dict)

    @field_validator("environments")
    @classmethod
    def _env_names(cls, value: dict[str, EnvironmentPolicy]) -> dict[str, EnvironmentPolicy]:
        if not value:
            raise ValueError("at least one environment is required")
        for name in value:
            check_label(name, "environment name")
        return value

    @field_validator("services")
    @classmethod
    def _service_names(cls, value: dict[str, ServiceOverrides]) -> dict[str, ServiceOverrides]:
        for name in value:
            check_label(name, "service name")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _attach_raw(cls, data: Any, handler: Any) -> Policy:
        if isinstance(data, Policy):
            return data
        raw = None
        if isinstance(data, dict) and isinstance(data.get("environments"), dict):
            raw = {
                k: copy.deepcopy(v) if isinstance(v, dict) else {}
                for k, v in data["environments"].items()
            }
        policy = handler(data)
        if raw is None:
            raw = {
                name: env.model_dump(exclude_unset=True)
                for name, env in policy.environments.items()
            }
        policy._raw_envs = raw
        policy._merged = {}
        policy._targets = {}
        policy._check_references()
        return policy

    # ------------------------------------------------------------------ validation

    def _check_references(self) -> None:
        for name, env in self.environments.items():
            self._check_env(f"environments.{name}", name, env)
        for service, overrides in self.services.items():
            for env_name in overrides.environments:
                where = f"services.{service}.environments.{env_name}"
                if env_name not in self.environments:
                    raise ValueError(
                        f"{where}: unknown environment {env_name!r} (defined: {self._defined()})"
                    )
                try:
                    merged = self._merge(env_name, service)
                except ValidationError as exc:
                    raise ValueError(f"{where}.{_first_error(exc)}") from None
                self._check_env(where, env_name, merged)
        self._check_cycles(None)
        for service in self.services:
            self._check_cycles(service)

    def _check_env(self, where: str, name: str, env: EnvironmentPolicy) -> None:
        if env.promote_from != BUILD and env.promote_from not in self.environments:
            raise ValueError(
                f"{where}.promote_from: unknown environment {env.promote_from!r} "
                f"(defined: {self._defined()}; or 'build')"
            )
        if env.gates.approval is not None:
            for approver in env.gates.approval.approvers:
                if approver.startswith("team:"):
                    team = approver[len("team:") :]
                    if team not in self.approvers.teams:
                        known = ", ".join(self.approvers.teams) or "none"
                        raise ValueError(
                            f"{where}.gates.approval.approvers: unknown team {team!r} "
                            f"(approvers.teams defines: {known})"
                        )

    def _check_cycles(self, service: str | None) -> None:
        for start in self.environments:
            seen = [start]
            current = start
            while True:
                source = self.environment(current, service).promote_from
                if source == BUILD:
                    break
                if source in seen:
                    chain = " -> ".join([*seen[seen.index(source) :], source])
                    prefix = f"services.{service}." if service else ""
                    raise ValueError(
                        f"{prefix}environments.{start}.promote_from: promotion cycle {chain}"
                    )
                seen.append(source)
                current = source

    def _defined(self) -> str:
        return ", ".join(self.environments)

    def _merge(self, env: str, service: str) -> EnvironmentPolicy:
        overrides = self.services.get(service)
        override = overrides.environments.get(env) if overrides else None
        if not override:
            return self.environments[env]
        return EnvironmentPolicy.model_validate(_deep_merge(self._raw_envs[env], override))

    # ------------------------------------------------------------------ API

    def env_names(self) -> list[str]:
        """Environment names in the order ferry.yaml lists them."""
        return list(self.environments)

    def environment(self, env: str, service: str | None = None) -> EnvironmentPolicy:
        """ENV's policy, with SERVICE's overrides deep-merged over it when given."""
        # Asked once per cell and decision (tens of thousands for `ferry status`): a pair seen
        # before was checked then. (A private attribute of a pydantic model is read through
        # __getattr__: once here, not four times.)
        merged = self._merged
        if service is not None:
            found = merged.get((env, service))
            if found is not None:
                return found
        if env not in self.environments:
            raise PolicyError(f"unknown environment {env!r}: ferry.yaml defines {self._defined()}")
        if service is None:
            return self.environments[env]
        try:
            check_label(service, "service name")
        except ValueError as exc:
            raise PolicyError(str(exc)) from None
        found = merged[(env, service)] = self._merge(env, service)
        return found

    def targets_from(self, source: str, service: str | None = None) -> list[str]:
        """Environments promoted from SOURCE ('build' for a fresh build), in file order."""
        # Asked twice per decision; a pair seen before is answered from memory.
        targets = self._targets
        found = targets.get((source, service))
        if found is None:
            found = targets[(source, service)] = tuple(
                name
                for name in self.environments
                if self.environment(name, service).promote_from == source
            )
        return list(found)

    def values_path(self, env: str, service: str) -> str:
        """The values file of SERVICE in ENV, relative to the repository root."""
        try:
            check_label(env, "environment name")
            check_label(service, "service name")
            path = self.layout.values_path.format(env=env, service=service)
            return _check_relative(path, "values path")
        except ValueError as exc:
            raise PolicyError(str(exc)) from None

    @property
    def digest_key(self) -> str:
        return self.layout.digest_key

    @property
    def repository_key(self) -> str:
        """The digest key's sibling 'repository' (image.digest -> image.repository)."""
        parts = self.layout.digest_key.split(".")
        return ".".join([*parts[:-1], "repository"])


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err["loc"])
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if err["type"] == "missing":
        msg = "required key is missing"
    return f"{loc}: {msg}" if loc else msg


def load_policy(text: str, source: str = "ferry.yaml") -> Policy:
    """Parse and validate ferry.yaml; raise PolicyError with one readable line that names the
    file, the line (and column, for YAML syntax) and the reason."""
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise PolicyError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{source}:1: must be a mapping with an 'environments' key")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        message = _first_error(exc)
    except ValueError as exc:
        message = str(exc)
    # Every message starts with the dotted path of the key it is about.
    path = message.split(":", 1)[0].split(".") if ":" in message else []
    raise PolicyError(f"{source}:{_line_of(text, path)}: {message}")


def _line_of(text: str, path: list[str]) -> int:
    """The line (1-based) of the deepest key of PATH that ferry.yaml has (1 if none)."""
    try:
        node: Any = YAML(typ="rt", pure=True).load(text)
    except YAMLError:
        return 1
    line = 0
    for part in path:
        if isinstance(node, dict) and part in node:
            line = node.lc.key(part)[0]  # type: ignore[attr-defined]
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            line = node.lc.item(int(part))[0]  # type: ignore[attr-defined]
            node = node[int(part)]
        else:
            break
    return line + 1
