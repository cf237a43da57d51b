"""Many GET, HGET, HGETALL and MGET reads packed by hand and sent in one write on one connection,
their replies read back in order: redis-py's pipeline packs each command and keeps each reply
through several layers, which costs more than the server does for `ferry status`'s 90,000 reads
at 10,000 services (six times what this costs, with hiredis parsing the replies)."""

from __future__ import annotations

import os
import threading
from typing import Any, cast

from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser
from redis.commands.core import CoreCommands
from redis.exceptions import ExecAbortError, ResponseError
from redis.utils import HIREDIS_AVAILABLE, safe_str, truncate_text

if HIREDIS_AVAILABLE:
    import hiredis

Wanted = tuple[str, bytes, bytes]  # (command, key, field: b"" but for HGET)
Recorded = tuple[tuple[Any, ...], dict[str, Any]]  # one command's (args, options), see Commands

_HGET = b"*3\r\n$4\r\nHGET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
_PACKED = {
    "get": b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n",
    "hgetall": b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%b\r\n",
}


def read(client: Any, wanted: list[Wanted]) -> list[Any]:
    """The answers to WANTED's commands (GET, HGET, HGETALL) through CLIENT's connection pool,
    sent in one write on one connection and read back in order."""
    parts = [
        _HGET % (len(key), key, len(field), field)
        if command == "hget"
        else _PACKED[command] % (len(key), key)
        for command, key, field in wanted
    ]
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
        return _replies(conn, len(parts))
    except BaseException:
        conn.disconnect()  # an error reply, or a failure: replies may be left unread on it
        raise
    finally:
        pool.release(conn)


def _replies(conn: Any, n: int, *, keep_errors: bool = False) -> list[Any]:
    """The next N replies on CONN, in order, each parsed by the connection's parser. With
    hiredis's, the replies already read from the socket are taken from its reader directly: a
    quarter of the CPU of `read_response` per reply (0.02 s rather than 0.075 s for `ferry
    status`'s 90,000 at 10,000 services), which is still asked whenever the reader needs more
    bytes, so that reading the socket, its errors and its timeouts stay redis-py's. An error
    reply is raised, or with KEEP_ERRORS kept in its place (every reply is read all the same)."""
    parser = conn._parser
    if not isinstance(parser, _HiredisParser) or parser._reader is None:
        return [_read_one(conn, keep_errors) for _ in range(n)]
    gets = parser._reader.gets
    push = parser._hiredis_PushNotificationType
    out: list[Any] = []
    while len(out) < n:
        reply = gets()
        if reply is NOT_ENOUGH_DATA:
            reply = _read_one(conn, keep_errors)  # reads the socket until a reply is parsed
        elif isinstance(reply, Exception) and not (keep_errors and _kept(reply)):
            raise reply  # an error reply (ResponseError and its kinds, as redis-py makes them)
        elif push is not None and isinstance(reply, push):
            parser.handle_push_response(reply)  # RESP3: not a reply to a command of ours
            continue
        out.append(reply)
    return out


def _kept(error: Exception) -> bool:
    """Is ERROR a command's error reply (a lost connection, a server loading, is raised)?"""
    return isinstance(error, ResponseError)


def _read_one(conn: Any, keep_errors: bool) -> Any:
    try:
        return conn.read_response()
    except ResponseError as e:
        if not keep_errors:
            raise
        return e


class Commands(CoreCommands):
    """redis-py's command methods (set, hgetall, xadd, xreadgroup, ...) recording what each would
    send, `(args, options)`, in `commands`, for `exchange`; a pipeline's face."""

    _event_dispatcher: Any = None  # redis-py's client protocol names it; unused here

    def __init__(self) -> None:
        self.commands: list[Recorded] = []

    def execute_command(self, *args: Any, **options: Any) -> Commands:
        self.commands.append((args, options))
        return self


def exchange(
    client: Any,
    commands: list[Recorded],
    *,
    transaction: bool,
    conn: Any = None,
    prefix: int = 0,
) -> list[Any]:
    """What redis-py's `client.pipeline(transaction=...)` with COMMANDS queued returns from
    `execute()` (the same answers, through the client's own reply callbacks; the first error
    raised, as it raises it; the whole exchange tried again on a dropped connection, as its
    retry policy says), for a fraction of its CPU: the commands packed by hiredis in one write
    on one connection of CLIENT's pool (a server, not a cluster), the replies read in order.
    TRANSACTION: inside MULTI/EXEC. An error reply to EXEC's commands is raised as
    `ExecFailed`, which says which of them failed (they all ran). PREFIX (not with
    TRANSACTION): the first PREFIX commands alone go in a MULTI/EXEC, the others after it as a
    pipeline; an error reply to one of the others is raised as without PREFIX, else one to the
    prefix's commands as `ExecFailed` (the others' answers in it). CONN: a connection of that
    pool the caller holds (`held`), rather than one taken from the pool and given back."""
    if conn is not None:
        return _tried(conn, client, commands, transaction, prefix)
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        return _tried(conn, client, commands, transaction, prefix)
    finally:
        pool.release(conn)


def held(client: Any, holder: threading.local) -> Any:
    """A connection of CLIENT's pool that this thread keeps in HOLDER, for `exchange`: taking
    one from the pool and giving it back (a lock, a poll for stale data, the pool's metrics)
    costs more than a decision's Python around it. `exchange` leaves it with every reply read
    or disconnected (it reconnects when used again); in a forked child, another is taken."""
    mine = getattr(holder, "conn", None)
    if mine is None or mine[0] != os.getpid():
        mine = holder.conn = (os.getpid(), client.connection_pool.get_connection())
    return mine[1]


def _tried(
    conn: Any,
    client: Any,
    commands: list[Recorded],
    transaction: bool,
    prefix: int = 0,
) -> list[Any]:
    return cast(
        list[Any],
        conn.retry.call_with_retry(
            lambda: _exchange_on(conn, client, commands, transaction, prefix),
            lambda _error: conn.disconnect(),
        ),
    )


class ExecFailed(ResponseError):
    """Some of a transaction's commands failed as EXEC ran them (WRONGTYPE, a script's error):
    the others ran. `failed`: their indexes in the commands given to `exchange`; `answers`: the
    answer to each command (the error, for those). The Bus says more (`Bus.ack`): how many of
    the commands were queued writes (`queued`), whose the failed ones were (`owners`), and which
    entries were therefore left pending (`pending`)."""

    def __init__(self, message: str, failed: list[int], answers: list[Any]) -> None:
        super().__init__(message)
        self.failed = failed
        self.answers = answers
        self.queued = 0
        self.owners: list[Any] = []
        self.pending: list[str] = []


def _packed(conn: Any, commands: list[Recorded]) -> list[bytes]:
    if HIREDIS_AVAILABLE:
        pack = hiredis.pack_command
        try:
            return [pack(args) for args, _ in commands]
        except TypeError:
            pass  # redis-py says what it cannot send
    return [b"".join(conn.pack_command(*args)) for args, _ in commands]


def _callbacks(client: Any) -> dict[str, Any]:
    """CLIENT's reply callbacks as a plain dict by command name (redis-py's is case-blind, at a
    cost per look-up), made once per client."""
    made: dict[str, Any] | None = getattr(client, "_ferry_callbacks", None)
    if made is None or len(made) != len(client.response_callbacks):
        made = {k.upper(): v for k, v in client.response_callbacks.items()}
        client._ferry_callbacks = made
    return made


def _exchange_on(
    conn: Any,
    client: Any,
    commands: list[Recorded],
    transaction: bool,
    prefix: int = 0,
) -> list[Any]:
    wire = _packed(conn, commands)
    atomic = len(wire) if transaction else prefix  # the first ATOMIC commands: in MULTI/EXEC
    if atomic:
        wire = [_MULTI, *wire[:atomic], _EXEC, *wire[atomic:]]
    read = False  # every reply read: the connection may serve again
    try:
        conn.send_packed_command([b"".join(wire)])
        # MULTI's OK, each command's QUEUED (or its answer), EXEC's answers, the others' answers
        replies = _replies(conn, len(wire), keep_errors=True)
        read = True
    finally:
        if not read:
            conn.disconnect()  # replies may be left unread on it
    if atomic:
        if isinstance(replies[0], ResponseError):
            raise replies[0]  # MULTI refused
        queued, ran, after = replies[1 : atomic + 1], replies[atomic + 1], replies[atomic + 2 :]
        if isinstance(ran, ResponseError):  # EXECABORT: refused as queued, nothing of it ran
            errors = [(n, r) for n, r in enumerate(queued) if isinstance(r, ResponseError)]
            if errors and isinstance(ran, ExecAbortError):
                raise _annotated(errors[0][1], errors[0][0], commands) from None
            raise ran
        replies = [*ran, *after]
    errors = [(n, r) for n, r in enumerate(replies) if isinstance(r, ResponseError)]
    outside = [(n, r) for n, r in errors if n >= atomic]
    if outside:
        raise _annotated(outside[0][1], outside[0][0], commands)
    callbacks = _callbacks(client)
    out = []
    for (args, options), reply in zip(commands, replies, strict=True):
        if isinstance(reply, ResponseError):
            out.append(reply)
            continue
        callback = callbacks.get(args[0])
        if callback is None and isinstance(args[0], str) and not args[0].isupper():
            callback = callbacks.get(args[0].upper())
        if callback is not None:
            if "keys" in options:
                options = {k: v for k, v in options.items() if k != "keys"}
            reply = callback(reply, **options)
        out.append(reply)
    if errors:
        n, first = errors[0]
        message = str(_annotated(first, n, commands))
        raise ExecFailed(message, [n for n, _ in errors], out) from first
    return out


_MULTI = b"*1\r\n$5\r\nMULTI\r\n"
_EXEC = b"*1\r\n$4\r\nEXEC\r\n"


def _annotated(error: ResponseError, n: int, commands: list[Recorded]) -> ResponseError:
    """ERROR as redis-py's pipeline words it: which command of the pipeline caused it."""
    cmd = " ".join(map(safe_str, commands[n][0]))
    error.args = (
        f"Command # {n + 1} ({truncate_text(cmd)}) of pipeline caused error: {error.args[0]}",
        *error.args[1:],
    )
    return error
