"""Push changes to the browsers: one reader per board process follows Ferry's streams (XREAD
BLOCK, no polling) and tells every open page which services an entry concerns; the page then
fetches those rows, rendered by the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ferry.core.events import decode_fields
from ferry.runtime.logging import get_logger
from ferry.runtime.settings import Settings

# The streams whose entries change what a cell says: an event, the decision it led to, a merge,
# a canary measurement, a dead letter.
WATCHED = ("ci", "signals", "changes", "promotions", "canary", "audit", "dlq")
HEARTBEAT_S = 15.0
QUEUE_SIZE = 256


def services_of(short: str, fields: dict[str, str]) -> set[str]:
    """The services an entry of stream SHORT concerns."""
    if short == "audit":
        return {fields.get("subject", "").split("@", 1)[0].split(" ", 1)[0]} - {""}
    if short == "dlq":
        try:
            payload = json.loads(fields.get("payload", "{}"))
        except ValueError:
            return set()
        service = payload.get("service") if isinstance(payload, dict) else None
        return {service} if isinstance(service, str) and service else set()
    return {fields["service"]} if fields.get("service") else set()


class Hub:
    """Fans the streams' news out to every connected page (an asyncio queue each)."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        self.pages: set[asyncio.Queue[dict[str, Any]]] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # redis-py may answer the cancellation of a blocked XREAD with its own error.
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await self._task

    def _tell(self, news: dict[str, Any]) -> None:
        for queue in list(self.pages):
            try:
                queue.put_nowait(news)
            except asyncio.QueueFull:
                # A page that fell this far behind reloads its whole grid instead.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait({"all": True, "services": []})

    async def _follow(self) -> None:
        log = get_logger()
        # Typed as Any: redis-py's stubs do not know the connection hands out bytes.
        client: Any = aioredis.Redis.from_url(self.url)
        names = {self.settings.stream(s): s for s in WATCHED}
        try:
            # Start at each stream's newest entry: a page renders what is there when it opens.
            last: dict[str, str] = {}
            for stream in names:
                newest = await client.xrevrange(stream, count=1)
                last[stream] = newest[0][0].decode() if newest else "0-0"
            while True:
                try:
                    found = await client.xread(last, block=5000, count=500)
                except (OSError, aioredis.ConnectionError) as e:
                    log.warning("board lost Redis; retrying", error=str(e))
                    await asyncio.sleep(1.0)
                    continue
                touched: set[str] = set()
                for stream, entries in found:
                    name = stream.decode()
                    for entry_id, raw in entries:
                        last[name] = entry_id.decode()
                        touched |= services_of(names[name], decode_fields(raw))
                if touched:
                    self._tell({"all": False, "services": sorted(touched)})
        finally:
            await client.aclose()

    async def subscribe(self) -> AsyncIterator[str]:
        """Server-sent events for one page: `touch` with the services that changed."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self.pages.add(queue)
        try:
            # A browser reconnects after a second when the connection drops.
            yield "retry: 1000\n\n"
            while True:
                try:
                    news = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield ": still here\n\n"  # keeps proxies from closing an idle stream
                    continue
                yield f"event: touch\ndata: {json.dumps(news)}\n\n"
        finally:
            self.pages.discard(queue)
