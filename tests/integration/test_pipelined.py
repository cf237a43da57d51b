"""adapters/pipelined.py sends `ferry status`'s reads packed by hand and reads the replies back
through the connection's parser: they must be what redis-py's own pipeline answers, in RESP2 and
RESP3, with hiredis's parser (read from its reader directly) and redis-py's own, and an error
reply must raise, leaving the client fit for use."""

from __future__ import annotations

import pytest
import redis
from redis._parsers import _HiredisParser, _RESP2Parser, _RESP3Parser

from ferry.adapters import pipelined


@pytest.mark.parametrize("hiredis", [True, False])
@pytest.mark.parametrize("protocol", [2, 3])
def test_bulk_replies_are_what_redis_py_answers(
    redis_url: str, prefix: str, protocol: int, hiredis: bool
) -> None:
    python_parser = _RESP2Parser if protocol == 2 else _RESP3Parser
    parser = {} if hiredis else {"parser_class": python_parser}
    client = redis.Redis.from_url(redis_url, protocol=protocol, **parser)
    conn = client.connection_pool.get_connection()
    assert isinstance(conn._parser, _HiredisParser) == hiredis
    client.connection_pool.release(conn)
    k = [f"{prefix}bulk:{i}".encode() for i in range(6)]
    big = b"x" * (3 << 20)  # longer than one read of the socket
    client.set(k[0], b"plain")
    client.set(k[1], big)
    client.hset(k[2], mapping={b"a": b"1", b"b": b"", b"c\r\n": b"\r\n$3"})
    wanted = [("get", k[1], b"")] + [
        ("get", k[0], b""),
        ("get", k[5], b""),  # missing
        ("hget", k[2], b"a"),
        ("hget", k[2], b"z"),  # missing field
        ("hgetall", k[2], b""),
        ("hgetall", k[5], b""),  # missing hash
    ] * 3000
    with client.pipeline(transaction=False) as pipe:
        for command, key, field in wanted:
            getattr(pipe, command)(key, field) if command == "hget" else getattr(pipe, command)(key)
        expected = pipe.execute()
    assert pipelined.read(client, wanted) == expected

    # A wrong type: the error is raised; the next read works.
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        pipelined.read(client, [("get", k[0], b""), ("hgetall", k[0], b""), ("get", k[0], b"")])
    assert pipelined.read(client, [("get", k[0], b"")]) == [b"plain"]
    client.delete(*k)


@pytest.mark.parametrize("protocol", [2, 3])
def test_mget_is_what_redis_py_answers(redis_url: str, prefix: str, protocol: int) -> None:
    """Many MGETs in one write (cells_with_state's 60,000 keys at 10,000 services): a missing
    key and a key of another type are None, as MGET says."""
    client = redis.Redis.from_url(redis_url, protocol=protocol)
    keys = [f"{prefix}mget:{i}".encode() for i in range(2500)]
    client.mset({k: f"v{i}" for i, k in enumerate(keys) if i % 3})
    client.hset(keys[3], "a", "1")
    assert pipelined.mget(client, keys, per=1000) == client.mget(keys)
    assert pipelined.mget(client, []) == []
    client.delete(*keys)
