"""Ferry's configuration: environment variables FERRY_*, read once by pydantic-settings."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ferry.runtime.logging import add_secrets

REDIS_SCHEMES = ("redis", "rediss", "unix")
# Approximate trimming keeps whole nodes of about 100 entries: a shorter bound means nothing.
MIN_STREAM_MAXLEN = 100


def _default_consumer() -> str:
    # Unique per replica: two processes never share a consumer name, so each has its own PEL.
    return f"{socket.gethostname()}-{os.getpid()}"


def slot_tag(key: str) -> str:
    """What Redis Cluster hashes to find KEY's slot: the text between the first { and the next }
    when that is not empty, else the whole key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


class Settings(BaseSettings):
    """Everything a worker or the CLI needs to know about where things are and how to behave."""

    model_config = SettingsConfigDict(env_prefix="FERRY_", extra="ignore")

    redis_url: str | None = None
    # FERRY_REDIS_URL names one node of a Redis Cluster (Ferry's own client; see
    # docs/operations.md for what runs on a cluster).
    redis_cluster: bool = False
    home: Path = Field(default_factory=lambda: Path.home() / ".ferry")
    gitops_repo: str | None = None
    forge: Literal["local", "github", "gitlab", "gitea"] = "local"
    forge_url: str | None = None
    forge_token: SecretStr | None = None
    # owner/name (GitLab: the project path); unset: what FERRY_GITOPS_REPO's clone URL names
    forge_repo: str | None = None
    forge_merge_method: Literal["merge", "squash", "rebase"] = "merge"
    # The fleet-wide request budget; unset: the provider's documented limits (0: no limit)
    forge_writes_per_minute: int | None = Field(default=None, ge=0)
    forge_writes_per_hour: int | None = Field(default=None, ge=0)
    forge_requests_per_hour: int | None = Field(default=None, ge=0)
    # How long one forge call waits for the budget before it gives up for now (and is retried)
    forge_budget_wait_s: float = Field(default=30.0, gt=0)
    forge_timeout_s: float = Field(default=30.0, gt=0)
    forge_attempts: int = Field(default=6, ge=1)
    # The first retry's wait; each next one doubles it (with jitter), at most 10 s
    forge_backoff_s: float = Field(default=0.5, gt=0)
    stream_prefix: str = "ferry:"
    consumer: str = Field(default_factory=_default_consumer)
    max_deliveries: int = Field(default=5, ge=1)
    claim_idle_ms: int = Field(default=30_000, ge=100)
    poll_ms: int = Field(default=100, ge=1)
    # Entries read per XREADGROUP, handled in order and acknowledged together; unset: the
    # worker's own (gate-evaluator 100, whose decisions take a millisecond; the others 1, which
    # spreads slow work such as a promotion evenly over replicas).
    read_count: int | None = Field(default=None, ge=1)
    # What reads the workers' new entries: a loop of Ferry's own (a blocking XREADGROUP per
    # stream in a thread that handles what it read), or FastStream's subscribers (one server
    # only; see docs/redis.md for why the default is Ferry's).
    reader: Literal["ferry", "faststream"] = "ferry"
    # Below the claim idle time: an entry reclaimed from a dead replica must find its lock free.
    lock_ttl_ms: int = Field(default=10_000, ge=100)
    # Stream retention (docs/architecture.md, "Retention"): every XADD trims its stream to about
    # this many entries, and entries older than the age (0: no age limit) are trimmed now and
    # then; both far beyond the reclaim threshold, so a pending entry is reclaimed long before.
    stream_maxlen: int = 1_000_000
    stream_max_age_s: int = 7 * 24 * 3600
    # How often gate-evaluator looks again at promotions that wait for time or people.
    tick_s: float = Field(default=15.0, gt=0)
    # The Prometheus server canary-watcher's built-in provider queries, for the canary metrics
    # whose `prometheus` block names no address.
    prometheus_url: str | None = None
    # /healthz, /readyz and /metrics; unset: no HTTP server (`ferry up` gives each worker
    # FERRY_HTTP_PORT + its index when this is set).
    http_port: int | None = Field(default=None, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    # `ferry board` (and the board `ferry up` starts): the live web page.
    board_host: str = "127.0.0.1"
    board_port: int = Field(default=8090, ge=0, le=65535)
    # `ferry ingress` (docs/ingress.md): where it listens, the webhook secrets (one for all, or
    # one per endpoint, which wins), the largest body it reads, and how often the reconcile pass
    # looks for what webhooks missed (0: never).
    ingress_host: str = "127.0.0.1"
    ingress_port: int = Field(default=8088, ge=0, le=65535)
    ingress_max_body: int = Field(default=1 << 20, ge=1)
    ingress_reconcile_s: float = Field(default=300.0, ge=0)
    # At most one audit record (and log line) per refused source, endpoint and reason in this
    # many seconds; the next one counts those in between (0: every refusal).
    ingress_refused_audit_s: float = Field(default=60.0, ge=0)
    webhook_secret: SecretStr | None = None
    webhook_secret_github: SecretStr | None = None
    webhook_secret_gitlab: SecretStr | None = None
    webhook_secret_gitea: SecretStr | None = None
    webhook_secret_ci: SecretStr | None = None
    webhook_secret_argocd: SecretStr | None = None
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        # Checked here, so that a wrong URL is one line from every command, not a traceback from
        # inside redis-py; the sentences never quote the URL, which may hold a password.
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in REDIS_SCHEMES:
            shown = f"{parts.scheme!r}" if parts.scheme else "none"
            raise ValueError(
                f"FERRY_REDIS_URL must start with redis://, rediss:// or unix:// "
                f"(e.g. redis://:PASSWORD@host:6379/0), got scheme {shown}"
            )
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError:
            raise ValueError("FERRY_REDIS_URL has a port that is not a number") from None
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("FERRY_REDIS_URL names no host (e.g. redis://:PASSWORD@host:6379/0)")
        return value

    @field_validator("stream_prefix")
    @classmethod
    def _prefix_has_no_hash_tag(cls, value: str) -> str:
        # A brace would make the prefix a Redis Cluster hash tag: every stream in one slot.
        if "{" in value or "}" in value:
            raise ValueError(
                "FERRY_STREAM_PREFIX may not contain { or }: Ferry chooses the hash slots itself"
            )
        return value

    @model_validator(mode="after")
    def _register_secrets(self) -> Settings:
        # As soon as a secret is known, no log line or error sentence of this process shows it.
        add_secrets(self.secret_values())
        return self

    @model_validator(mode="after")
    def _faststream_on_one_server(self) -> Settings:
        if self.reader == "faststream" and self.redis_cluster:
            raise ValueError(
                "FERRY_READER=faststream cannot read a Redis Cluster (FERRY_REDIS_CLUSTER=1): "
                "FastStream's broker speaks to one server only; use FERRY_READER=ferry"
            )
        return self

    @model_validator(mode="after")
    def _lock_expires_before_reclaim(self) -> Settings:
        if self.lock_ttl_ms >= self.claim_idle_ms:
            raise ValueError(
                f"FERRY_LOCK_TTL_MS ({self.lock_ttl_ms}) must be below FERRY_CLAIM_IDLE_MS "
                f"({self.claim_idle_ms}): a reclaimed entry must find a dead replica's lock expired"
            )
        return self

    @model_validator(mode="after")
    def _retention_beyond_reclaim(self) -> Settings:
        if self.stream_maxlen < MIN_STREAM_MAXLEN:
            raise ValueError(
                f"FERRY_STREAM_MAXLEN ({self.stream_maxlen}) must be at least "
                f"{MIN_STREAM_MAXLEN}: streams are trimmed approximately, in nodes of about 100 "
                "entries, and a shorter stream would drop entries before they are handled"
            )
        least_s = -(-10 * self.claim_idle_ms // 1000)
        if self.stream_max_age_s != 0 and self.stream_max_age_s < least_s:
            raise ValueError(
                f"FERRY_STREAM_MAX_AGE_S ({self.stream_max_age_s}) must be 0 (no age limit) or "
                f"at least 10 x FERRY_CLAIM_IDLE_MS ({least_s} s): an entry left pending by a "
                "dead replica must be reclaimed long before it is trimmed"
            )
        return self

    def secret_values(self) -> list[str]:
        """Every secret this configuration holds: each SecretStr setting, and the password in
        FERRY_REDIS_URL (as written and URL-decoded)."""
        values = [v.get_secret_value() for v in self.__dict__.values() if isinstance(v, SecretStr)]
        password = urlsplit(self.redis_url).password if self.redis_url else None
        if password:
            values += [password, unquote(password)]
        return values

    def stream(self, name: str) -> str:
        """The Redis key of stream NAME ("ci" -> "ferry:ci")."""
        return f"{self.stream_prefix}{name}"

    def key(self, *parts: str) -> str:
        """A Redis key for Ferry's own state, under the same prefix as the streams."""
        return self.stream_prefix + ":".join(parts)

    def near(self, anchor: str, kind: str, *parts: str) -> str:
        """A key of Ferry's own in the Redis Cluster hash slot of the key ANCHOR (a script or
        transaction that writes both stays on one slot): <prefix><kind>:{<anchor>}:<parts>."""
        tag = slot_tag(anchor)
        if "}" in tag:
            raise ValueError(f"no hash tag can name the slot of {anchor!r}")
        return f"{self.stream_prefix}{kind}:{{{tag}}}" + "".join(f":{p}" for p in parts)

    @property
    def redis_url_file(self) -> Path:
        return self.home / "redis.url"

    def workdir(self, worker: str) -> Path:
        """A private directory for this replica (its clone of the GitOps repo)."""
        return self.home / "work" / f"{worker}-{self.consumer}"
