"""Many GET, HGET, HGETALL and MGET reads sent in one write on one connection, their replies
parsed as they come: redis-py's pipeline packs and reads each command through several layers,
which costs more than the server does for `ferry status`'s 90,000 reads at 10,000 services."""

from __future__ import annotations

from typing import Any

import redis

Wanted = tuple[str, bytes, bytes]  # (command, key, field: b"" but for HGET)

_HGET = b"*3\r\n$4\r\nHGET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
_HEADS = {"get": b"*2\r\n$3\r\nGET\r\n", "hgetall": b"*2\r\n$7\r\nHGETALL\r\n"}


def read(client: Any, wanted: list[Wanted]) -> list[Any]:
    """The answers to WANTED's commands (GET, HGET, HGETALL) through CLIENT's connection pool,
    sent in one write on one connection and read back in order."""
    parts = []
    for command, key, field in wanted:
        if command == "hget":
            parts.append(_HGET % (len(key), key, len(field), field))
        else:
            parts.append(_HEADS[command] + _bulk(key))
    answers = _exchange(client, parts)
    for i, (command, _, _) in enumerate(wanted):
        if command == "hgetall" and isinstance(answers[i], list):  # RESP2: field, value, ...
            flat = answers[i]
            answers[i] = dict(zip(flat[::2], flat[1::2], strict=True))
    return answers


def mget(client: Any, keys: list[bytes], per: int = 1000) -> list[bytes | None]:
    """The value of each of KEYS (None: missing, or not a string), as MGET answers, PER keys a
    command, all in one write."""
    parts = [
        b"*%d\r\n$4\r\nMGET\r\n" % (len(chunk) + 1) + b"".join(_bulk(k) for k in chunk)
        for chunk in (keys[at : at + per] for at in range(0, len(keys), per))
    ]
    return [value for answer in _exchange(client, parts) for value in answer]


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _exchange(client: Any, parts: list[bytes]) -> list[Any]:
    """Send the packed commands PARTS on one connection of CLIENT's pool; their replies, in
    order (an error reply raised once every reply is read: the connection stays in step)."""
    if not parts:
        return []
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(parts)])
        sock = getattr(conn, "_sock", None)  # redis-py's socket, connected by the send
        if sock is not None:
            answers = _replies(sock, len(parts))
        else:
            answers = [conn.read_response() for _ in parts]
    except BaseException:
        conn.disconnect()  # replies may be left unread on it
        raise
    finally:
        pool.release(conn)
    for answer in answers:
        if isinstance(answer, redis.ResponseError):
            raise answer
    return answers


class _Short(Exception):
    """The bytes received so far end inside a reply."""


def _replies(sock: Any, count: int) -> list[Any]:
    """COUNT replies read from SOCK: redis-py's parser reads a reply through several calls per
    line, about as long as the rest of a cell's read; this one parses the bytes as they come,
    the answers of GET, HGET, HGETALL and MGET (RESP2 and RESP3) and errors."""
    out: list[Any] = []
    data, at = b"", 0
    while True:
        try:
            while len(out) < count:
                value, at = _reply(data, at)
                out.append(value)
            return out
        except _Short:
            pass
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise redis.ConnectionError("Connection closed by server.")
        data, at = data[at:] + chunk, 0


def _reply(data: bytes, at: int) -> tuple[Any, int]:
    """The reply that starts at AT in DATA, and where the next one starts."""
    end = data.find(b"\r\n", at)
    if end < 0:
        raise _Short
    kind, line, after = data[at], data[at + 1 : end], end + 2
    if kind == 36:  # $: a bulk string, or null (RESP2)
        size = int(line)
        if size < 0:
            return None, after
        if after + size + 2 > len(data):
            raise _Short
        return data[after : after + size], after + size + 2
    if kind in (42, 37):  # *: an array, %: a map (RESP3)
        n = int(line)
        if n < 0:
            return None, after
        items = []
        for _ in range(2 * n if kind == 37 else n):
            item, after = _reply(data, after)
            items.append(item)
        return (dict(zip(items[::2], items[1::2], strict=True)) if kind == 37 else items), after
    if kind == 95:  # _: null (RESP3)
        return None, after
    if kind == 43:  # +: a simple string
        return line, after
    if kind == 58:  # :: an integer
        return int(line), after
    if kind == 45:  # -: an error
        return redis.ResponseError(line.decode("utf-8", "replace")), after
    raise redis.InvalidResponse(f"unexpected reply type {chr(kind)!r}")
