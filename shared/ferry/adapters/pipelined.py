"""Many GET, HGET and HGETALL reads sent in one write on one connection, their replies parsed as
they come: redis-py's pipeline packs and reads each command through several layers, which costs
more than the server does for `ferry status`'s 90,000 reads at 10,000 services."""

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
            parts.append(_HEADS[command] + b"$%d\r\n%b\r\n" % (len(key), key))
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(parts)])
        sock = getattr(conn, "_sock", None)  # redis-py's socket, connected by the send
        if sock is not None:
            answers = _replies(sock, len(wanted))
        else:
            answers = [conn.read_response() for _ in wanted]
    except BaseException:
        conn.disconnect()  # replies may be left unread on it
        raise
    finally:
        pool.release(conn)
    for i, (command, _, _) in enumerate(wanted):
        if isinstance(answers[i], redis.ResponseError):
            raise answers[i]  # every reply was read: the connection can be used again
        if command == "hgetall" and isinstance(answers[i], list):  # RESP2: field, value, ...
            flat = answers[i]
            answers[i] = dict(zip(flat[::2], flat[1::2], strict=True))
    return answers


class _Short(Exception):
    """The bytes received so far end inside a reply."""


def _replies(sock: Any, count: int) -> list[Any]:
    """COUNT replies read from SOCK: redis-py's parser reads a reply through several calls per
    line, about as long as the rest of a cell's read; this one parses the bytes as they come,
    the answers of GET, HGET and HGETALL (RESP2 and RESP3) and errors."""
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
