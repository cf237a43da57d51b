"""/healthz, /readyz and /metrics of a worker replica."""

from __future__ import annotations

import socket

import httpx

from tests.helpers import Cluster, digest_of, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_serves_health_readiness_and_metrics(cluster: Cluster) -> None:
    cluster.init_repo(["api"])
    port = free_port()
    cluster.start("gate-evaluator", FERRY_HTTP_PORT=str(port))
    base = f"http://127.0.0.1:{port}"

    def health() -> int | None:
        # The replica joins its group before its HTTP server listens: give the server its start.
        try:
            return httpx.get(f"{base}/healthz").status_code
        except httpx.ConnectError:
            return None

    assert wait_until(health, 15, "the health endpoint") == 200
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.text.strip() == "ready"
    assert httpx.get(f"{base}/nope").status_code == 404

    cluster.build("api", digest_of("m"))
    cluster.bus.redis.xadd(cluster.bus.stream("ci"), {"kind": "ci", "service": "API"})

    def counted() -> str | None:
        text = httpx.get(f"{base}/metrics").text
        done = 'ferry_entries_total{outcome="done",stream="ci",worker="gate-evaluator"} 1.0'
        dead = 'ferry_entries_total{outcome="dead",stream="ci",worker="gate-evaluator"} 1.0'
        return text if done in text and dead in text else None

    text = wait_until(counted, 15, "metrics for one done and one dead entry")
    assert "ferry_handle_seconds_bucket" in text
