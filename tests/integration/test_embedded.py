"""The embedded server: several started at once (a parallel test run, `ferry up` beside a demo)
each get a port of their own and answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import redis

from ferry.adapters.embedded import start_server


def test_servers_started_at_the_same_moment_each_get_their_own_port() -> None:
    with ThreadPoolExecutor(6) as pool:
        servers = list(pool.map(lambda _: start_server(), range(6)))
    try:
        urls = [s.connection_url for s in servers]
        assert len(set(urls)) == 6
        for i, url in enumerate(urls):
            client = redis.Redis.from_url(url)
            client.set("who", i)
        # Each answers with what was written to it, not to a neighbour sharing its port.
        assert [int(redis.Redis.from_url(u).get("who")) for u in urls] == list(range(6))
    finally:
        for s in servers:
            s.stop()
