"""notifier: tells people, through webhooks, when a promotion needs an approval, is rejected,
fails or is rolled back, and when an entry is dead-lettered.

It reads ferry:changes, ferry:signals and ferry:dlq in its own consumer groups, so nothing it
does (a receiver down, a slow one) holds up a promotion. Each notice goes once to each receiver:
a receiver that took it is remembered in Redis before the entry is acknowledged, so a restart or
a redelivery does not send it again. A receiver that fails is retried with backoff in the
handler, then again on redelivery, and finally the entry is dead-lettered (a dead letter of the
notifier's own is not announced).
"""

from __future__ import annotations

import os
import time

import httpx

from ferry.core.errors import Rejected
from ferry.core.events import Event
from ferry.core.notices import SIGNATURE_HEADER, Notice, body, notice_for, receivers, signature
from ferry.core.policy import Webhook
from ferry.runtime import resources
from ferry.runtime.logging import add_secrets
from ferry.runtime.worker import WorkerContext, WorkerSpec

ATTEMPTS = 4  # tries per receiver in one delivery of the entry: 0.5 s, 1 s, 2 s apart
FIRST_DELAY_S = 0.5
TIMEOUT_S = 5.0
REMEMBER_S = 30 * 24 * 3600
# How long one replica may take to send one notice (every try, timeouts and backoff included).
SENDING_S = int(ATTEMPTS * TIMEOUT_S) + 10


class ReceiverDown(RuntimeError):
    """A webhook did not take a notice after ATTEMPTS tries: the entry is redelivered later."""


def handle(event: Event, ctx: WorkerContext) -> None:
    policy = resources.gitops(ctx).at_main().policy
    notice = notice_for(event, policy)
    if notice is None:
        return
    for hook in receivers(policy, notice):
        sent = ctx.bus.settings.key("notified", hook.name, notice.event_id)
        sending = _sending_key(ctx, sent)
        if not _mine(ctx, sent, sending):
            continue  # taken before a restart or a redelivery, or by a copy of this entry
        try:
            _deliver(ctx, hook, notice)
        except BaseException:
            ctx.bus.redis.delete(sending)
            raise
        with ctx.bus.redis.pipeline(transaction=True) as pipe:
            pipe.set(sent, "1", ex=REMEMBER_S)
            pipe.delete(sending)
            pipe.execute()
        ctx.log.info("notified", webhook=hook.name, notice=notice.kind)


def _sending_key(ctx: WorkerContext, sent: str) -> str:
    """Who is sending the notice SENT names: in SENT's hash slot (one transaction ends both)."""
    return ctx.bus.settings.near(sent, "notified", "sending")


def _mine(ctx: WorkerContext, sent: str, sending: str) -> bool:
    """May this replica send the notice SENT names? Not once a receiver took it; and while
    another copy of the entry (reclaimed from a replica that seemed idle while it backed off) is
    sending it, wait for that one to finish, so a receiver never gets it twice."""
    deadline = time.monotonic() + SENDING_S
    while time.monotonic() < deadline:
        if ctx.bus.redis.exists(sent):
            return False
        if ctx.bus.redis.set(sending, "1", nx=True, ex=SENDING_S):
            return True
        time.sleep(0.2)
    raise ReceiverDown("another replica is still sending this notice")


def _deliver(ctx: WorkerContext, hook: Webhook, notice: Notice) -> None:
    url = os.environ.get(hook.url_env)
    if not url:
        raise Rejected(f"webhook {hook.name!r}: {hook.url_env} is not set: export its URL")
    add_secrets([url])  # a Slack webhook URL is a secret: never in a log line or dead letter
    content = body(hook, notice)
    headers = {"Content-Type": "application/json", "X-Ferry-Event": notice.event_id}
    if hook.secret_env:
        secret = os.environ.get(hook.secret_env)
        if not secret:
            raise Rejected(f"webhook {hook.name!r}: {hook.secret_env} is not set: export it")
        add_secrets([secret])
        headers[SIGNATURE_HEADER] = signature(secret, content)
    error = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(FIRST_DELAY_S * 2 ** (attempt - 1))
        try:
            reply = httpx.post(url, content=content, headers=headers, timeout=TIMEOUT_S)
        except httpx.HTTPError as e:
            error = type(e).__name__  # its text names the URL
            continue
        if reply.status_code < 300:
            return
        error = f"HTTP {reply.status_code}"
        if 400 <= reply.status_code < 500 and reply.status_code not in (408, 429):
            raise Rejected(f"webhook {hook.name!r} refused the notice ({error}): check its URL")
    raise ReceiverDown(f"webhook {hook.name!r} did not take the notice: {error} after {ATTEMPTS}")


WORKER = WorkerSpec(
    name="notifier",
    handlers={"changes": handle, "signals": handle, "dlq": handle},
    description="tells people through webhooks what needs them or went wrong",
)
