"""adapters/pipelined.py sends `ferry status`'s reads packed by hand and reads the replies back
through the connection's parser: they must be what redis-py's own pipeline answers, in RESP2 and
RESP3, with hiredis's parser (read from its reader directly) and redis-py's own, and an error
reply must raise, leaving the client fit for use."""

from __future__ import annotations

from typing import Any

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


def _decision_commands(pipe: Any, k: list[str], stream: str, group: str) -> None:
    """What a decision's round trips carry: a lock's SET NX, reads, queued writes (an EVAL
    among them), an XACK and the next read."""
    pipe.hset(k[0], "integration", '{"status": "success"}')
    pipe.set(k[1], "token", nx=True, px=10_000)
    pipe.set(k[1], "other", nx=True, px=10_000)  # taken: None
    pipe.get(k[2])
    pipe.get(k[3])  # missing
    pipe.hget(k[0], "integration")
    pipe.hgetall(k[0])
    pipe.hgetall(k[4])  # missing
    pipe.zadd(k[5], {"m": 1.5})
    pipe.zrem(k[5], "m")
    pipe.xadd(stream, {"a": "1", "b": "2"}, maxlen=1000, approximate=True)
    pipe.execute_command("EVAL", "return redis.call('GET', KEYS[1])", 1, k[2])
    pipe.delete(k[6])
    pipe.xack(stream, group, "0-1")
    pipe.xreadgroup(group, "c", {stream: ">"}, count=10)


def _decision_keys(client: Any, name: str) -> tuple[list[str], str]:
    """Fresh keys for `_decision_commands` under NAME, one of them set, and a stream with a
    group "g" and one entry."""
    k = [f"{name}:x:{i}" for i in range(7)]
    stream = f"{name}:s"
    client.set(k[2], "value")
    client.xgroup_create(stream, "g", id="0", mkstream=True)
    client.xadd(stream, {"first": "entry"})
    return k, stream


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("transaction", [False, True])
def test_exchange_answers_what_redis_py_pipeline_answers(
    redis_url: str, prefix: str, protocol: int, transaction: bool
) -> None:
    """The Bus's round trips (`pipelined.exchange`) answer what redis-py's pipeline answers,
    in RESP2 and RESP3, in a transaction or not."""
    client = redis.Redis.from_url(redis_url, protocol=protocol)
    answers = []
    for run in ("redis-py", "by hand"):
        k, stream = _decision_keys(client, f"{prefix}{run}")
        if run == "redis-py":
            with client.pipeline(transaction=transaction) as pipe:
                _decision_commands(pipe, k, stream, "g")
                got = pipe.execute()
        else:
            commands = pipelined.Commands()
            _decision_commands(commands, k, stream, "g")
            got = pipelined.exchange(client, commands.commands, transaction=transaction)
        # The entry ids differ from run to run; what they hold does not.
        answers.append([_without_ids(a) for a in got])
    assert answers[0] == answers[1]


def _without_ids(answer: Any) -> Any:
    if isinstance(answer, bytes) and answer[:1].isdigit() and b"-" in answer:
        return b"<id>"
    if isinstance(answer, dict) and all(b":s" in s for s in answer):  # XREADGROUP, RESP3
        return {
            s.split(b":")[-1]: [[(b"<id>", f) for _, f in e] for e in es]
            for s, es in answer.items()
        }
    if isinstance(answer, list) and answer and isinstance(answer[0], list):  # XREADGROUP
        return [[s.split(b":")[-1], [(b"<id>", f) for _, f in e]] for s, e in answer]
    return answer


@pytest.mark.parametrize("transaction", [False, True])
def test_exchange_errors_are_redis_py_pipeline_errors(
    redis_url: str, prefix: str, transaction: bool
) -> None:
    """An error reply raises what redis-py's pipeline raises, worded alike; in a transaction, a
    command refused as queued runs nothing, and one that fails as EXEC runs it raises
    ExecFailed naming it (the others ran). The client serves on after each."""
    client = redis.Redis.from_url(redis_url)
    text, other, counter = f"{prefix}text", f"{prefix}other", f"{prefix}n"
    client.set(text, "plain")

    def wrong_type(pipe: Any) -> None:
        pipe.incr(counter)
        pipe.hset(text, "f", "v")  # WRONGTYPE: fails as it runs
        pipe.set(other, "1")

    def wrong_arity(pipe: Any) -> None:
        pipe.incr(counter)
        pipe.execute_command("GET")  # refused as queued
        pipe.set(other, "1")

    messages = []
    for build in (wrong_type, wrong_arity):
        expected = []
        for run in ("redis-py", "by hand"):
            client.delete(counter, other)
            with pytest.raises(redis.ResponseError) as raised:
                if run == "redis-py":
                    with client.pipeline(transaction=transaction) as pipe:
                        build(pipe)
                        pipe.execute()
                else:
                    commands = pipelined.Commands()
                    build(commands)
                    pipelined.exchange(client, commands.commands, transaction=transaction)
            expected.append((str(raised.value), client.get(counter), client.get(other)))
            if run == "by hand" and transaction and build is wrong_type:
                assert isinstance(raised.value, pipelined.ExecFailed)
                assert raised.value.failed == [1]
            assert client.get(text) == b"plain"
        assert expected[0] == expected[1]
        messages.append(expected[1][0])
    assert "WRONGTYPE" in messages[0] and "Command # 2" in messages[0]
    client.delete(text)


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_prefix_in_a_transaction_answers_what_two_redis_py_pipelines_answer(
    redis_url: str, prefix: str, protocol: int
) -> None:
    """`exchange(prefix=N)`: the first N commands in one MULTI/EXEC and the others after it, in
    one round trip, answer what a redis-py transaction of the N and then a pipeline of the
    others answer."""
    client = redis.Redis.from_url(redis_url, protocol=protocol)
    answers = []
    for run in ("redis-py", "by hand"):
        k, stream = _decision_keys(client, f"{prefix}{run}")
        commands = pipelined.Commands()
        _decision_commands(commands, k, stream, "g")
        n = 8  # the writes and the first reads in the transaction
        if run == "redis-py":
            got = []
            for part, transaction in (
                (commands.commands[:n], True),
                (commands.commands[n:], False),
            ):
                with client.pipeline(transaction=transaction) as pipe:
                    for args, options in part:
                        pipe.execute_command(*args, **options)
                    got += pipe.execute()
        else:
            got = pipelined.exchange(client, commands.commands, transaction=False, prefix=n)
        answers.append([_without_ids(a) for a in got])
    assert answers[0] == answers[1]


def test_a_prefix_that_fails_as_exec_runs_it_leaves_the_others_answered(
    redis_url: str, prefix: str
) -> None:
    """A command of the prefix that fails as EXEC runs it (WRONGTYPE) raises ExecFailed naming
    it, with the other commands' answers, which all ran; one refused as queued runs none of the
    prefix, and the others still run; an error after the prefix is raised as a pipeline's is."""
    client = redis.Redis.from_url(redis_url)
    text, counter, after = f"{prefix}text", f"{prefix}n", f"{prefix}after"
    client.set(text, "plain")

    def exchange(*commands: tuple[Any, ...]) -> list[Any]:
        return pipelined.exchange(client, [(c, {}) for c in commands], transaction=False, prefix=2)

    with pytest.raises(pipelined.ExecFailed) as failed:
        exchange(("INCR", counter), ("HSET", text, "f", "v"), ("SET", after, "1"), ("GET", after))
    assert failed.value.failed == [1]
    assert failed.value.answers[0] == 1 and failed.value.answers[2:] == [True, b"1"]
    assert "WRONGTYPE" in str(failed.value) and "Command # 2" in str(failed.value)

    client.delete(after)
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        exchange(("INCR", counter), ("GET",), ("SET", after, "1"))
    assert client.get(counter) == b"1" and client.get(after) == b"1"

    with pytest.raises(redis.ResponseError, match="WRONGTYPE") as raised:
        exchange(("INCR", counter), ("GET", counter), ("HGET", text, "f"))
    assert not isinstance(raised.value, pipelined.ExecFailed)
    assert client.get(counter) == b"2"
    assert client.ping()
    client.delete(text, counter, after)
