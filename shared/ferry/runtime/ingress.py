"""`ferry ingress`: the webhook receiver, an ASGI application (Starlette) served by uvicorn.

    POST /webhooks/github | /webhooks/gitlab | /webhooks/gitea | /webhooks/ci | /webhooks/argocd
    GET  /healthz | /readyz | /metrics

A delivery is checked in this order, and the first failure answers with one line and publishes
nothing but an audit record: a body over FERRY_INGRESS_MAX_BODY (413); no secret configured, or
a missing or wrong signature (401); a body that is not JSON or not what the forge sends (400).
Then its events are published once per delivery id (shared in Redis by every replica) and it is
answered 202 with what was published. The reconcile pass runs beside it (ferry.app.reconcile).

Refusals are audited at most once per source, endpoint and reason every
FERRY_INGRESS_REFUSED_AUDIT_S seconds (shared by the replicas); the record says how many like it
were refused since the one before, so a flood of unsigned requests cannot fill the audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ferry.adapters.bus import Bus
from ferry.adapters.forge.webhooks import (
    PROVIDERS,
    BadPayload,
    Unauthentic,
    delivery_id,
    read,
    verify,
)
from ferry.app import webhooks
from ferry.core.errors import one_line
from ferry.runtime.logging import get_logger, one_reason
from ferry.runtime.settings import Settings

WORKER = "ingress"


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = one_reason(reason)


class IngressMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "ferry_webhook_deliveries_total",
            "Webhook deliveries, by endpoint and outcome (published, duplicate, ignored, or the "
            "HTTP status of a refusal).",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "ferry_webhook_seconds",
            "Time to handle one delivery, first byte read to answer.",
            ["provider"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.reconciled = Counter(
            "ferry_reconcile_changes_total",
            "Changes the reconcile pass found that no webhook had reported.",
            registry=self.registry,
        )


# Count a refusal; open the window (and return the count, this one included, then start it
# again) unless a record about the same refusals was written less than ARGV[1] ms ago (0).
_ADMIT = """
local n = redis.call('INCR', KEYS[2])
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('DEL', KEYS[2])
  return n
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 0
"""


class RefusalAudit:
    """At most one audit record per (endpoint, source, status, reason) every WINDOW seconds,
    whichever replica refuses: the others are counted, and the next record says how many."""

    def __init__(self, bus: Bus, window_s: float) -> None:
        self.bus = bus
        self.window_ms = int(window_s * 1000)
        self._admit = bus.redis.register_script(_ADMIT)

    def admit(self, provider: str, client: str, status: int, reason: str) -> int:
        """How many refusals the record to write now stands for (this one included); 0: none
        is written now (counted toward the next)."""
        if self.window_ms <= 0:
            return 1
        # A reason's numbers (a JSON error's position, a size) do not make it another reason.
        same = re.sub(r"\d+", "#", reason)[:200]
        digest = hashlib.sha256(f"{provider}|{client}|{status}|{same}".encode()).hexdigest()[:24]
        window = self.bus.settings.key("refused", digest)
        # The count beside its window, in one Redis Cluster hash slot (the script writes both).
        keys = [window, self.bus.settings.near(window, "refused-count")]
        keep = max(self.window_ms * 100, 24 * 3600 * 1000)  # the count waits for the next record
        return int(self._admit(keys=keys, args=[self.window_ms, keep]))


class Ingress:
    """One ingress replica: its settings, the bus, and what it counts."""

    def __init__(self, settings: Settings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus
        self.metrics = IngressMetrics()
        self.refusals = RefusalAudit(bus, settings.ingress_refused_audit_s)
        self.log = get_logger().bind(worker=WORKER)
        self.gitops_repo = gitops_repo_name(settings)

    def secret(self, provider: str) -> str | None:
        for secret in (
            getattr(self.settings, f"webhook_secret_{provider}"),
            self.settings.webhook_secret,
        ):
            if secret is not None and secret.get_secret_value():
                return secret.get_secret_value()
        return None

    async def receive(self, request: Request) -> Response:
        provider = request.path_params["provider"]
        started = time.perf_counter()
        try:
            status, answer = await self._receive(provider, request)
            outcome = (
                "published"
                if answer["published"]
                else "duplicate"
                if answer["duplicates"]
                else "ignored"
            )
            response: Response = JSONResponse(answer, status_code=status)
        except Refused as refused:
            outcome = str(refused.status)
            response = PlainTextResponse(refused.reason + "\n", status_code=refused.status)
            await run_in_threadpool(self._audit_refusal, provider, request, refused)
        self.metrics.deliveries.labels(provider, outcome).inc()
        self.metrics.seconds.labels(provider).observe(time.perf_counter() - started)
        return response

    async def _receive(self, provider: str, request: Request) -> tuple[int, dict[str, Any]]:
        body = await read_body(request, self.settings.ingress_max_body)
        secret = self.secret(provider)
        if not secret:
            raise Refused(
                401,
                f"no webhook secret is configured for {provider}: set "
                f"FERRY_WEBHOOK_SECRET_{provider.upper()} or FERRY_WEBHOOK_SECRET",
            )
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            verify(provider, secret, headers, body)
            payload = _json(body)
            delivery = delivery_id(provider, headers, body)
            if provider == "argocd" and "x-ferry-delivery" not in headers:
                # Argo CD names no delivery, and the same report may come again later (synced,
                # degraded, synced): each is published; a retried one leaves the state as it was.
                delivery = "argocd-" + uuid.uuid4().hex
            if provider == "ci":
                if not isinstance(payload, dict):
                    raise BadPayload(
                        "the body must be a JSON object with the fields of a CI result"
                    )
                if "x-ferry-delivery" not in headers and isinstance(payload.get("event_id"), str):
                    delivery = payload["event_id"]
                outcome = await run_in_threadpool(self._ci, payload, delivery)
            else:
                hooks = read(provider, headers, payload)
                outcome = await run_in_threadpool(self._forge, provider, hooks, delivery)
        except Unauthentic as e:
            raise Refused(401, str(e)) from e
        except BadPayload as e:
            raise Refused(400, str(e)) from e
        except Exception as e:  # noqa: BLE001 - Redis unreachable, say: the forge retries later
            self.log.warning("delivery failed", provider=provider, error=str(e))
            raise Refused(503, f"could not publish now ({type(e).__name__}): send it again") from e
        self.log.info("delivery", provider=provider, delivery=delivery, **outcome.as_dict())
        return 202, {"delivery": delivery, **outcome.as_dict()}

    def _ci(self, payload: dict[str, Any], delivery: str) -> webhooks.Outcome:
        event = webhooks.ci_event(payload, delivery)
        return webhooks.publish(self.bus, [event], "ci", delivery)

    def _forge(self, provider: str, hooks: list[Any], delivery: str) -> webhooks.Outcome:
        events, ignored = webhooks.events_of(
            hooks,
            gitops_repo=self.gitops_repo,
            promotion=webhooks.lookup(self.bus),
            event_id=f"{provider}:{delivery}",
        )
        outcome = webhooks.publish(self.bus, events, provider, delivery)
        return webhooks.Outcome(outcome.published, outcome.duplicates, tuple(ignored))

    def _audit_refusal(self, provider: str, request: Request, refused: Refused) -> None:
        client = request.client.host if request.client else "?"
        try:
            count = self.refusals.admit(provider, client, refused.status, refused.reason)
            if not count:
                return  # counted: the next record about these refusals says how many
            reason = refused.reason
            if count > 1:
                reason += f" ({count - 1} more like it since the last record)"
            self.bus.audit(
                WORKER,
                "webhook",
                f"POST /webhooks/{provider} from {client}",
                f"refused {refused.status}",
                reason,
            )
        except Exception as e:  # noqa: BLE001 - Redis down: the refusal stands, the log has it
            count = 1
            self.log.warning("could not audit a refusal", error=str(e))
        self.log.warning(
            "delivery refused",
            provider=provider,
            status=refused.status,
            reason=refused.reason,
            client=client,
            refusals=count,
        )

    async def ready(self) -> str | None:
        try:
            await run_in_threadpool(self.bus.redis.ping)
        except Exception as e:  # noqa: BLE001 - any failure means not ready, said in one line
            return one_line(f"redis unreachable: {type(e).__name__}")
        return None


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes LIMIT bytes (whatever Content-Length
    claims, a chunked body is counted as it arrives)."""
    declared = request.headers.get("content-length")
    too_big = Refused(413, f"body over {limit} bytes (FERRY_INGRESS_MAX_BODY)")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_big
        except ValueError:
            raise Refused(400, "Content-Length is not a number") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError as e:
        raise BadPayload(f"the body is not JSON ({e.msg} at char {e.pos})") from None
    except (UnicodeDecodeError, RecursionError) as e:
        raise BadPayload(f"the body is not JSON a forge sends ({type(e).__name__})") from None


def gitops_repo_name(settings: Settings) -> str | None:
    """OWNER/NAME of the GitOps repository on the forge: pull requests there are promotions,
    those anywhere else application pull requests."""
    if settings.forge_repo:
        return settings.forge_repo.strip("/")
    if not settings.gitops_repo or "://" not in settings.gitops_repo:
        return None
    from urllib.parse import urlsplit

    path = urlsplit(settings.gitops_repo).path.strip("/").removesuffix(".git")
    return path or None


def create_app(settings: Settings, url: str, *, reconcile: bool = True) -> Starlette:
    """The ingress as an ASGI application on the bus at URL."""
    bus = Bus(settings, url)
    ingress = Ingress(settings, bus)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        reason = await ingress.ready()
        return PlainTextResponse((reason or "ready") + "\n", status_code=503 if reason else 200)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(ingress.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def unknown(request: Request) -> Response:
        name = request.path_params["provider"]
        if name in PROVIDERS:
            return await ingress.receive(request)
        return PlainTextResponse(
            f"no endpoint /webhooks/{name[:40]}: use " + ", ".join(PROVIDERS) + "\n", 404
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = None
        if reconcile and settings.ingress_reconcile_s > 0:
            from ferry.app.reconcile import run_periodically

            task = asyncio.create_task(run_periodically(settings, bus, ingress.metrics.reconciled))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = Starlette(
        routes=[
            Route("/webhooks/{provider}", unknown, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )
    app.state.ingress = ingress
    return app


def run_ingress(settings: Settings) -> None:
    """Serve the ingress on FERRY_INGRESS_HOST:FERRY_INGRESS_PORT until SIGINT or SIGTERM."""
    import uvicorn

    from ferry.runtime.logging import configure
    from ferry.runtime.runner import ensure_server

    configure(settings.log_level, settings.log_format)
    url, server = ensure_server(settings, persist=True)
    log = get_logger().bind(worker=WORKER)
    missing = [p for p in PROVIDERS if not Ingress(settings, Bus(settings, url)).secret(p)]
    if missing:
        log.warning(
            "no webhook secret: these endpoints refuse every delivery",
            endpoints=[f"/webhooks/{p}" for p in missing],
        )
    try:
        uvicorn.run(
            create_app(settings, url),
            host=settings.ingress_host,
            port=settings.ingress_port,
            log_level="warning",
            access_log=False,
            # One process: scale by running more replicas (they share deduplication in Redis).
            workers=None,
            proxy_headers=True,
        )
    finally:
        if server is not None:
            from ferry.adapters import embedded

            embedded.forget_url(settings, url)
            server.stop()
