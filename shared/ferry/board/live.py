"""Push changes to the browsers: one reader per stream per board process follows Ferry's streams
(XREAD BLOCK, no polling) and tells every open page which services an entry concerns; the page
then fetches those rows, rendered by the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
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
BLOCK_MS = 5000  # how long one XREAD waits for news
CLUSTER_BLOCK_MS = 1000  # the same on a cluster, where a read's thread must end soon after a stop
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
            # A read in a thread (on a cluster) is not interrupted by the cancellation: the
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
        # one slot.
        if self.settings.redis_cluster:
            # redis-py's asyncio cluster client may never return from a blocked XREAD it was told
            # to cancel, and then the event loop cannot close. The sync client in a thread of
            # our own cannot hang the loop: a cancelled read's thread ends with its short block.
            import redis

            sync: Any = redis.RedisCluster.from_url(self.url)
            threads = ThreadPoolExecutor(len(WATCHED), thread_name_prefix="board-live")
            loop = asyncio.get_running_loop()

            async def xread(stream: str, last: str) -> Any:
                return await loop.run_in_executor(
                    threads,
                    lambda: sync.xread({stream: last}, block=CLUSTER_BLOCK_MS, count=500),
                )

            async def newest(stream: str) -> Any:
                return await loop.run_in_executor(threads, lambda: sync.xrevrange(stream, count=1))

            try:
                await self._readers(newest, xread)
            finally:
                threads.shutdown(wait=False, cancel_futures=True)
                sync.close()
            return
        client: Any = aioredis.Redis.from_url(self.url)

        async def xread_async(stream: str, last: str) -> Any:
            return await client.xread({stream: last}, block=BLOCK_MS, count=500)

        async def newest_async(stream: str) -> Any:
            return await client.xrevrange(stream, count=1)

        try:
            await self._readers(newest_async, xread_async)
        finally:
            await client.aclose()

    async def _readers(self, newest: Any, xread: Any) -> None:
        async with asyncio.TaskGroup() as readers:
            for short in WATCHED:
                readers.create_task(self._follow_one(short, newest, xread))

    async def _follow_one(self, short: str, newest: Any, xread: Any) -> None:
        log = get_logger()
        stream = self.settings.stream(short)
        last: str | None = None
        while True:
            try:
                if last is None:
                    # Start at the newest entry: a page renders what is there when it opens.
                    top = await newest(stream)
                    last = top[0][0].decode() if top else "0-0"
                found = await xread(stream, last)
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
