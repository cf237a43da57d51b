"""Many GET, HGET, HGETALL and MGET reads packed by hand and sent in one write on one connection,
their replies read back in order: redis-py's pipeline packs each command and keeps each reply
through several layers, which costs more than the server does for `ferry status`'s 90,000 reads
at 10,000 services (six times what this costs, with hiredis parsing the replies)."""

from __future__ import annotations

from typing import Any

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
    order (an error reply raised)."""
    if not parts:
        return []
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(parts)])
        # Each reply parsed by the connection's parser (hiredis's, in C, when installed).
        return [conn.read_response() for _ in parts]
    except BaseException:
        conn.disconnect()  # an error reply, or a failure: replies may be left unread on it
        raise
    finally:
        pool.release(conn)
