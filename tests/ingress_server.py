"""`ferry ingress` for the tests: served by uvicorn in a thread of this process (fast, for the
endpoint tests), or as its own process like a replica (`spawn_ingress`)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx
import uvicorn

from ferry.runtime.ingress import create_app
from ferry.runtime.settings import Settings
from tests.helpers import free_port, wait_until


class ThreadIngress:
    """The ingress app on 127.0.0.1 (a free port), until stop()."""

    def __init__(self, settings: Settings, redis_url: str, *, reconcile: bool = False) -> None:
        self.app = create_app(settings, redis_url, reconcile=reconcile)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadIngress:
        self.thread.start()
        wait_until(lambda: self.server.started, 10, "the ingress to start")
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> ThreadIngress:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn_ingress(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`ferry ingress` as its own process on a free port; returns it and its base URL once it
    answers /readyz."""
    port = free_port()
    env = {**env, "FERRY_INGRESS_HOST": "127.0.0.1", "FERRY_INGRESS_PORT": str(port)}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ferry", "ingress"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"ferry ingress exited: {log.read_text(errors='replace')}")
        try:
            return httpx.get(url + "/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 30, "ferry ingress to answer /readyz")
    return proc, url
