"""Push changes to the browsers: one reader per stream per board process follows Ferry's streams
(XREAD BLOCK, no polling) and tells every open page which services an entry concerns; the page
then fetches those rows, rendered by the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from redis.exceptions import RedisError

from ferry.adapters.bus import connect_redis
from ferry.core.events import decode_fields
from ferry.runtime.logging import get_logger
from ferry.runtime.settings import Settings

# The streams whose entries change what a cell says: an event, the decision it led to, a merge,
# a canary measurement, a dead letter.
WATCHED = ("ci", "signals", "changes", "promotions", "canary", "audit", "dlq")
HEARTBEAT_S = 15.0
BLOCK_MS = 1000  # how long one XREAD waits for news: a read's thread ends this soon after a stop
STOP_S = 2.0
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
            # A read in its thread is not interrupted by the cancellation: the
            # board is stopping, so it waits a moment, not for that.
            done, _ = await asyncio.wait({self._task}, timeout=STOP_S)
            # It may answer the cancellation with its own error (from each reader: a group).
            with contextlib.suppress(asyncio.CancelledError, RedisError, BaseExceptionGroup):
                if done:
                    self._task.result()

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
        # One reader per stream, each blocked on its own XREAD: the streams live in different
        # hash slots (on different nodes of a Redis Cluster), and one XREAD may only name keys of
        # one slot. Each reads with the sync client in a thread of our own: redis-py's asyncio
        # cluster client may never return from a blocked XREAD it was told to cancel, and then
        # the event loop cannot close; a cancelled read's thread ends with its short block.
        client: Any = connect_redis(self.url, cluster=self.settings.redis_cluster)
        threads = ThreadPoolExecutor(len(WATCHED), thread_name_prefix="board-live")
        try:
            async with asyncio.TaskGroup() as readers:
                for short in WATCHED:
                    readers.create_task(self._follow_one(client, threads, short))
        finally:
            threads.shutdown(wait=False, cancel_futures=True)
            client.close()

    async def _follow_one(self, client: Any, threads: ThreadPoolExecutor, short: str) -> None:
        log = get_logger()
        loop = asyncio.get_running_loop()
        stream = self.settings.stream(short)
        last: str | None = None
        while True:
            try:
                if last is None:
                    # Start at the newest entry: a page renders what is there when it opens.
                    top = await loop.run_in_executor(
                        threads, partial(client.xrevrange, stream, count=1)
                    )
                    last = top[0][0].decode() if top else "0-0"
                read = partial(client.xread, {stream: last}, block=BLOCK_MS, count=500)
                found = await loop.run_in_executor(threads, read)
            except (OSError, RedisError) as e:
                log.warning("board lost Redis; retrying", stream=stream, error=str(e))
                await asyncio.sleep(1.0)
                continue
            touched: set[str] = set()
            for _, entries in found or []:
                for entry_id, raw in entries:
                    last = entry_id.decode()
                    touched |= services_of(short, decode_fields(raw))
            if touched:
                self._tell({"all": False, "services": sorted(touched)})

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
