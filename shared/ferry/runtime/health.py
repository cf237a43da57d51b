"""/healthz, /readyz and /metrics (Prometheus) for one worker replica, on FERRY_HTTP_PORT.

A few lines of asyncio instead of a web framework: three GET routes, no request bodies."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)


class Metrics:
    """What a replica counts: entries by outcome, and how long handling took."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.entries = Counter(
            "ferry_entries_total",
            "Stream entries handled, by outcome (done, dead, retry).",
            ["worker", "stream", "outcome"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "ferry_handle_seconds",
            "Time to handle one entry, validation to acknowledgement.",
            ["worker", "stream"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        # The two series of each (worker, stream, outcome), looked up once: per entry, the
        # client's look-up by label values cost as much as the rest of the bookkeeping.
        self._series: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def observe(self, worker: str, stream: str, outcome: str, seconds: float) -> None:
        series = self._series.get((worker, stream, outcome))
        if series is None:
            series = self._series[(worker, stream, outcome)] = (
                self.entries.labels(worker, stream, outcome),
                self.seconds.labels(worker, stream),
            )
        series[0].inc()
        series[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


Ready = Callable[[], Awaitable[str | None]]  # None when ready, else the reason it is not


async def start_http(host: str, port: int, metrics: Metrics, ready: Ready) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing to read from them
            status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            if path == "/healthz":
                status, body = "200 OK", b"ok\n"
            elif path == "/readyz":
                reason = await ready()
                status = "200 OK" if reason is None else "503 Service Unavailable"
                body = (reason or "ready").encode() + b"\n"
            elif path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, metrics.render()
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
