"""Read the state of many (service, environment) pairs in a few pipelined round trips.

`gather` (app/snapshot.py) reads a dozen keys per pair; one command at a time, that is a dozen
round trips per decision and thousands for a page of 150 cells. Rather than write a second reader
that would have to know every key (and could drift from the first), `read_batched` runs the same
code against a stand-in for the Redis client that answers from what it fetched so far and notes
what it lacked; the missing keys are then fetched in one pipeline and the code runs again. A pass
that lacks nothing is the answer. Reads depend on earlier reads (the candidate names the digest
whose evidence is read next), so this takes a few rounds, as many whatever the number of cells.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar, cast

from ferry.adapters.bus import Bus

T = TypeVar("T")

MAX_ROUNDS = 8  # each round follows one more step of dependent reads; gather needs about three

# What a read named by a hint (`read_batched`) fetched last time, by hint: at most HINTS of them
# (a dozen keys each: about 2 KB), the oldest forgotten first.
HINTS = 4096
Wanted = tuple[str, bytes, bytes]  # (command, key, field: b"" but for HGET)


@dataclass
class Cost:
    """What one batched read cost: pipelined round trips and the commands they carried."""

    round_trips: int = 0
    commands: int = 0


def _key(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class _Stand:
    """Redis reads answered from fetched values (bytes, as redis-py gives them): GET, HGETALL, and
    the fields HGET and HEXISTS name (fetched one by one: a hash such as the live times of
    every digest ever merged may be large). Writes are refused: a read must not change anything."""

    def __init__(self) -> None:
        self.strings: dict[bytes, bytes | None] = {}
        self.hashes: dict[bytes, dict[bytes, bytes]] = {}
        self.fields: dict[tuple[bytes, bytes], bytes | None] = {}
        self.missing: set[tuple[str, bytes, bytes]] = set()

    def get(self, key: Any) -> bytes | None:
        k = _key(key)
        if k not in self.strings:
            self.missing.add(("get", k, b""))
            return None
        return self.strings[k]

    def hgetall(self, key: Any) -> dict[bytes, bytes]:
        k = _key(key)
        if k not in self.hashes:
            self.missing.add(("hgetall", k, b""))
            return {}
        return self.hashes[k]

    def hget(self, key: Any, field: Any) -> bytes | None:
        k, f = _key(key), _key(field)
        if k in self.hashes:
            return self.hashes[k].get(f)
        if (k, f) not in self.fields:
            self.missing.add(("hget", k, f))
            return None
        return self.fields[(k, f)]

    def hexists(self, key: Any, field: Any) -> bool:
        return self.hget(key, field) is not None

    def lacks(self, wanted: Wanted) -> bool:
        """Is WANTED's answer not here (to be fetched)?"""
        command, k, f = wanted
        if command == "get":
            return k not in self.strings
        if command == "hgetall":
            return k not in self.hashes
        return k not in self.hashes and (k, f) not in self.fields

    def apply(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A write queued after these values were fetched (see `Bus.keeping`): what it changes
        of them. HSET and HSETNX of one field, SET (NX): followed; other writes forget the keys
        they name (a script's keys), or everything when their keys are not known."""
        text = all(isinstance(a, str | bytes) for a in args)
        if name in ("hset", "hsetnx") and len(args) == 3 and not kwargs and text:
            k, f, v = (_key(a) for a in args)
            if k in self.hashes:
                if name == "hset" or f not in self.hashes[k]:
                    self.hashes[k] = {**self.hashes[k], f: v}
            elif (k, f) in self.fields and (name == "hset" or self.fields[(k, f)] is None):
                self.fields[(k, f)] = v
        elif name == "set" and len(args) == 2 and set(kwargs) <= {"nx", "ex", "px"} and text:
            k, v = _key(args[0]), _key(args[1])
            if k in self.strings and not (kwargs.get("nx") and self.strings[k] is not None):
                self.strings[k] = v
        elif name in ("xadd", "xack", "zadd", "zrem", "hdel", "hincrby", "expire", "pexpire"):
            self._forget([args[0]])
        elif name == "delete":
            self._forget(list(args))
        elif name == "execute_command" and str(args[0]).upper() in ("EVAL", "EVALSHA"):
            self._forget(list(args[3 : 3 + int(args[2])]))
        else:
            self.strings.clear()
            self.hashes.clear()
            self.fields.clear()

    def _forget(self, keys: list[Any]) -> None:
        for k in map(_key, keys):
            self.strings.pop(k, None)
            self.hashes.pop(k, None)
            for kf in [kf for kf in self.fields if kf[0] == k]:
                del self.fields[kf]

    def register_script(self, script: str) -> Callable[..., Any]:
        def refuse(*_: Any, **__: Any) -> Any:
            raise RuntimeError("a batched read ran a script: reads only")

        return refuse

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"a batched read called {name}: only GET and hash reads are batched")


class _ReadBus:
    """What the stores need of a Bus (its settings and its client), reading through _Stand."""

    def __init__(self, bus: Bus, stand: _Stand) -> None:
        self.settings = bus.settings
        self.redis = stand

    def stream(self, short: str) -> str:
        return self.settings.stream(short)


def _fetch(wanted: list[tuple[str, bytes, bytes]], pipe: Any) -> None:
    for command, key, field in wanted:
        if command == "hget":
            pipe.hget(key, field)
        else:
            getattr(pipe, command)(key)


def _keep(stand: _Stand, wanted: list[tuple[str, bytes, bytes]], answers: list[Any]) -> None:
    """Keep the ANSWERS to the WANTED reads where STAND answers them from."""
    for (command, key, field), answer in zip(wanted, answers, strict=True):
        if command == "get":
            stand.strings[key] = answer
        elif command == "hget":
            stand.fields[(key, field)] = answer
        else:
            stand.hashes[key] = answer


_hints: dict[Any, list[Wanted]] = {}


def read_batched(
    bus: Bus, read: Callable[[Bus], T], cost: Cost | None = None, *, hint: Any = None
) -> T:
    """READ(bus) with every GET and hash read it makes served by pipelined round trips. On a bus
    that is already such a view (a batched read calling another), READ runs on it as it is.
    HINT (hashable) names what READ is about, such as a decision's subject: what the last read
    with the same hint fetched is fetched first, in the first round trip, so that READ usually
    runs once rather than once to learn what it lacks and once more to answer. A guess that is
    wrong costs reads, never a wrong answer: READ still runs until it lacks nothing."""
    if isinstance(bus, _ReadBus):
        return read(cast(Bus, bus))
    # Under a lock kept across a batch's decisions (Bus.keeping): what was read under it.
    stand = bus.kept_reads(_Stand) or _Stand()
    fresh = not (stand.strings or stand.hashes or stand.fields)
    view = cast(Bus, _ReadBus(bus, stand))
    cost = cost if cost is not None else Cost()
    if hint is not None:
        hint = (bus.settings.stream_prefix, hint)  # another prefix's keys are other keys
    guess = _hints.get(hint) if hint is not None else None
    wanted = [w for w in guess if stand.lacks(w)] if guess else []
    fetched: list[Wanted] = []
    for _ in range(MAX_ROUNDS):
        if wanted:
            # With the writes (and a lock's SET NX) this thread queued in front, in the same trip.
            answers = bus.round_trip(partial(_fetch, wanted))
            cost.round_trips += 1
            cost.commands += len(wanted)
            _keep(stand, wanted, answers)
            fetched += wanted
        stand.missing.clear()
        result = read(view)
        if not stand.missing:
            # Learnt from nothing, what was fetched is what READ reads: next time, the guess.
            if hint is not None and guess is None and fresh and fetched:
                if len(_hints) >= HINTS:
                    del _hints[next(iter(_hints))]
                _hints[hint] = fetched
            return result
        if guess is not None:
            _hints.pop(hint, None)  # gone stale: learnt afresh next time
        wanted = sorted(stand.missing)
    raise RuntimeError(f"a batched read still lacked keys after {MAX_ROUNDS} rounds")
