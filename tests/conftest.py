"""Test fixtures: a real Redis-protocol server and real git repositories.

The suite starts its own embedded Valkey (the one Ferry uses by default), so it never depends
on, or disturbs, a Redis already running on the machine. Set FERRY_TEST_REDIS=testcontainers to
run it against testcontainers' Redis container instead, where a Docker engine answers; or
FERRY_TEST_REDIS=redis://host:port to use a server of your own (it must be disposable: tests
write under their own key prefix but do not clean up).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.helpers import Cluster

# Property tests check answers, not speed: a loaded machine must not fail them on a deadline.
settings.register_profile("ferry", deadline=None)
settings.load_profile("ferry")

_counter = itertools.count()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    choice = os.environ.get("FERRY_TEST_REDIS", "embedded")
    if choice == "testcontainers":
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(6379)
            yield f"redis://{host}:{port}"
    elif choice.startswith("redis://"):
        yield choice
    else:
        from ferry.adapters.embedded import start_server

        server = start_server()
        try:
            yield server.connection_url
        finally:
            server.stop()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: tests share the server, never their streams."""
    return f"t{os.getpid()}-{next(_counter)}:"


@pytest.fixture
def cluster(redis_url: str, prefix: str, tmp_path) -> Iterator[Cluster]:  # noqa: ANN001
    c = Cluster(redis_url=redis_url, prefix=prefix, root=tmp_path)
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def env(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """The cluster, with its FERRY_* settings in this process's environment (for the CLI)."""
    for key, value in cluster.env().items():
        if key.startswith("FERRY_"):
            monkeypatch.setenv(key, value)
    return cluster
