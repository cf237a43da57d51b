"""The built-in Prometheus provider against a real Prometheus server (Debian's `prometheus`
package) scraping a small exporter this test runs: a metric that crosses its failure condition
rolls the canary back; a query that errors four times in a row and then recovers does not."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_canary import PROD_CANARY
from tests.helpers import Cluster, digest_of, pin_digest, wait_until

SCRAPE = "1s"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _reply(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class Exporter:
    """A /metrics endpoint: canary_error_rate{digest="..."} for each digest given a value."""

    def __init__(self) -> None:
        self.rates: dict[str, float] = {}
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                lines = ["# TYPE canary_error_rate gauge"]
                lines += [
                    f'canary_error_rate{{digest="{d}"}} {v}' for d, v in exporter.rates.items()
                ]
                body = ("\n".join(lines) + "\n").encode()
                _reply(self, 200, body, "text/plain; version=0.0.4")

            def log_message(self, *args: object) -> None:
                pass

        self.server, self.url = _serve(Handler)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Exporter]]:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed: .ci/run installs Debian's package")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    exporter = Exporter()
    root = tmp_path_factory.mktemp("prometheus")
    target = exporter.url.removeprefix("http://")
    (root / "prometheus.yml").write_text(
        f"global: {{scrape_interval: {SCRAPE}, evaluation_interval: {SCRAPE}}}\n"
        f"scrape_configs:\n  - job_name: canary\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = _free_port()
    log = (root / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url) or proc.poll() is not None, 60, "prometheus to start")
        assert proc.poll() is None, (root / "prometheus.log").read_text()
        yield url, exporter
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        exporter.server.shutdown()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _scraped(url: str, digest: str, value: float) -> bool:
    query = f'canary_error_rate{{digest="{digest}"}}'
    result = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=5).json()
    series = result["data"]["result"]
    return bool(series) and float(series[0]["value"][1]) == value


POLICY = (
    PROD_CANARY
    + """\
    canary:
      count: {count}
      interval: 1s
      metrics:
        - name: error-rate
          prometheus:
            address: {address}
            query: 'canary_error_rate{{digest="{{{{digest}}}}"}}'
          success_condition: result[0] < 0.1
          failure_condition: result[0] >= 0.1
"""
)


def start(env: Cluster, address: str, count: int, before: str) -> None:
    """prod pins BEFORE (by hand); builds go to prod as a canary judged by Prometheus."""
    env.init_repo(["api"])

    def write(clone: Path) -> None:
        (clone / "ferry.yaml").write_text(POLICY.format(count=count, address=address))
        pin_digest(clone, "prod", "api", before)

    env.commit_by_hand("prod: a canary judged by Prometheus", write)
    env.start("gate-evaluator")
    env.start("pr-writer")
    env.start("canary-watcher")


def measurements(env: Cluster, digest: str) -> list[str]:
    return [m["phase"] for m in env.entries("canary") if m.get("digest") == digest]


def test_a_metric_crossing_its_failure_condition_rolls_the_canary_back(
    env: Cluster, prometheus: tuple[str, Exporter]
) -> None:
    url, exporter = prometheus
    before, canary = digest_of("prom-before"), digest_of("prom-canary")
    exporter.rates[canary] = 0.01
    wait_until(lambda: _scraped(url, canary, 0.01), 20, "the first scrape")
    start(env, url, count=100, before=before)
    env.build("api", canary)
    env.wait_pinned("api", "prod", canary)
    wait_until(lambda: "successful" in measurements(env, canary), 20, "a successful query")
    exporter.rates[canary] = 0.5  # the error rate crosses the failure condition
    env.wait_pinned("api", "prod", before, timeout=30)
    phases = measurements(env, canary)
    assert "failed" in phases
    assert "error" not in phases
    rollback = env.merged_pr(lambda p: "rollback" in p.labels)
    assert "error-rate failed=[0.5]" in rollback.body


class FlakyProxy:
    """Prometheus behind a proxy that answers 503 to the first FAILURES queries."""

    def __init__(self, upstream: str, failures: int) -> None:
        self.left = failures
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if proxy.left > 0:
                    proxy.left -= 1
                    body, status = b'{"status":"error","error":"unavailable"}', 503
                else:
                    answer = httpx.get(upstream + self.path, timeout=5)
                    body, status = answer.content, answer.status_code
                _reply(self, status, body, "application/json")

            def log_message(self, *args: object) -> None:
                pass

        self.server, self.url = _serve(Handler)


def test_four_query_errors_in_a_row_then_recovery_do_not_roll_back(
    env: Cluster, prometheus: tuple[str, Exporter]
) -> None:
    url, exporter = prometheus
    before, canary = digest_of("flaky-before"), digest_of("flaky-canary")
    exporter.rates[canary] = 0.02
    wait_until(lambda: _scraped(url, canary, 0.02), 20, "the first scrape")
    proxy = FlakyProxy(url, failures=4)
    try:
        start(env, proxy.url, count=2, before=before)
        env.build("api", canary)
        env.wait_pinned("api", "prod", canary)
        wait_until(lambda: env.changes("verified"), 30, "the canary to be verified")
    finally:
        proxy.server.shutdown()
    # (a query already running when the canary was verified may add one more)
    assert measurements(env, canary)[:6] == ["error"] * 4 + ["successful"] * 2
    assert env.repo.pinned("api", "prod") == canary
    assert not [p for p in env.forge.list_prs() if "rollback" in p.labels]
    errors = [m for m in env.entries("canary") if m["phase"] == "error"]
    assert "HTTP 503: unavailable" in errors[0]["value"]
