"""The board's ASGI app (Starlette): server-rendered pages, a small script, and server-sent
events. Read-only: every action stays in the CLI, and each page says which command to run."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ferry.adapters.forge.base import PullRequestNotFound
from ferry.app import board
from ferry.app.canary import describe as describe_canary
from ferry.app.reports import short_subject
from ferry.board.live import Hub
from ferry.core.errors import Rejected
from ferry.core.policy import PolicyError
from ferry.runtime.logging import get_logger, scrub_text
from ferry.runtime.resources import connect, forge, open_repo
from ferry.runtime.settings import Settings

STATIC = Path(__file__).parent / "static"


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return ""
    seconds = int((now - when).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def _css(state: str) -> str:
    return re.sub(r"[^a-z]+", "-", state.lower()).strip("-")


def _templates() -> Environment:
    env = Environment(
        loader=PackageLoader("ferry.board", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = lambda d: d.removeprefix("sha256:")[:12] if d else "-"
    env.filters["css"] = _css
    env.filters["canary"] = describe_canary
    env.filters["subject"] = short_subject
    env.globals["ago"] = _ago
    return env


class Board:
    """The app's resources: settings, the Redis bus, the GitOps repo, the live hub."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bus = connect(settings)
        self.repo = open_repo(settings)
        self.hub = Hub(settings, self.bus.url)
        self.templates = _templates()

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(name).render(now=datetime.now(UTC), **context)
        return HTMLResponse(html, status_code=status)

    # --- the grid -----------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        query = board.Query.parse(_params(request))
        found = await run_in_threadpool(board.grid, self.repo, self.bus, query, datetime.now(UTC))
        return self.page("index.html", grid=found, previews=await self._previews())

    async def grid_fragment(self, request: Request) -> Response:
        query = board.Query.parse(_params(request))
        found = await run_in_threadpool(board.grid, self.repo, self.bus, query, datetime.now(UTC))
        return self.page("grid.html", grid=found)

    async def rows_fragment(self, request: Request) -> Response:
        params = _params(request)
        extra = sorted(set(params) - {"service"})
        if extra:
            raise board.BadQuery(f"unknown parameter {extra[0]!r}: use service=NAME (repeated)")

        def read() -> tuple[list[str], list[board.Row]]:
            names = board.known_services(self.repo, params.get("service", []))
            main = self.repo.at_main()
            return main.policy.env_names(), board.rows(main, self.bus, names, datetime.now(UTC))

        envs, rows = await run_in_threadpool(read)
        return self.page("rows.html", envs=envs, rows=rows)

    async def grid_json(self, request: Request) -> Response:
        query = board.Query.parse(_params(request))
        found = await run_in_threadpool(board.grid, self.repo, self.bus, query, datetime.now(UTC))
        return JSONResponse(board.grid_as_dict(found))

    # --- a service's story, the events and PRs it links to --------------------------------------

    async def service(self, request: Request) -> Response:
        name = request.path_params["service"]
        if _params(request):
            raise board.BadQuery("a service's page takes no parameters")
        await run_in_threadpool(board.known_services, self.repo, [name])
        told = await run_in_threadpool(board.story, self.bus, name)
        return self.page("service.html", story=told)

    async def event(self, request: Request) -> Response:
        event_id = request.path_params["event_id"]
        if not re.fullmatch(r"[\x21-\x7e]{1,200}", event_id):
            raise board.BadQuery("an event id is 1 to 200 printable characters without spaces")
        found = await run_in_threadpool(board.find_event, self.bus, event_id)
        if found is None:
            raise HTTPException(404, f"no event {event_id!r} among the newest entries")
        stream, entry_id, fields = found
        return self.page(
            "event.html", event_id=event_id, stream=stream, entry_id=entry_id, fields=fields
        )

    async def pull(self, request: Request) -> Response:
        number = request.path_params["number"]
        if not 0 < number < 10**9:
            raise board.BadQuery("a pull request number is a positive whole number")

        def read() -> Any:
            return forge(self.settings).get_pr(number)

        try:
            pr = await run_in_threadpool(read)
        except PullRequestNotFound:
            raise HTTPException(404, f"no pull request #{number}") from None
        return self.page("pull.html", pr=pr)

    # --- live -------------------------------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        return StreamingResponse(
            self.hub.subscribe(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _previews(self) -> list[Any]:
        from ferry.app.previews import previews

        try:
            return await run_in_threadpool(previews, self.settings)
        except Exception as e:  # noqa: BLE001 - the grid still shows without the previews
            get_logger().warning("board: previews unavailable", error=scrub_text(str(e)))
            return []


def _params(request: Request) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        found.setdefault(key, []).append(value)
    return found


def create_app(settings: Settings) -> Starlette:
    b = Board(settings)

    async def bad_request(request: Request, exc: Exception) -> Response:
        status = 404 if isinstance(exc, board.UnknownService) else 400
        return _error(b, request, status, str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(b, request, exc.status_code, str(exc.detail))

    async def unavailable(request: Request, exc: Exception) -> Response:
        return _error(b, request, 503, f"Redis does not answer: {scrub_text(str(exc))}")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await b.hub.start()
        try:
            yield
        finally:
            await b.hub.stop()

    return Starlette(
        routes=[
            Route("/", b.index),
            Route("/fragments/grid", b.grid_fragment),
            Route("/fragments/rows", b.rows_fragment),
            Route("/api/grid", b.grid_json),
            Route("/services/{service}", b.service),
            Route("/events/{event_id:path}", b.event),
            Route("/pulls/{number:int}", b.pull),
            Route("/live", b.live),
            Route("/healthz", b.healthz),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={
            Rejected: bad_request,
            PolicyError: bad_request,
            HTTPException: http_error,
            redis.ConnectionError: unavailable,
        },
        lifespan=lifespan,
    )


def _error(b: Board, request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith(("/api/", "/fragments/")):
        return JSONResponse({"error": message}, status_code=status)
    return b.page("error.html", status=status, status_code=status, message=message)


def serve(settings: Settings, host: str, port: int) -> None:
    """Run the board on uvicorn until Ctrl-C or SIGTERM."""
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        # Open event streams never end by themselves: give them a moment, then close them.
        timeout_graceful_shutdown=2,
    )
