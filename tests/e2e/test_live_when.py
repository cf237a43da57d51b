"""`live_when: healthy` through the ingress: a digest merged into dev counts as live there only
once Argo CD's notification (signed, to /webhooks/argocd) reports the application synced to it
and healthy; a degraded report does not count, and `ferry explain` says what it waits for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.adapters.forge.webhooks import signature_headers
from tests.helpers import REGISTRY, Cluster, digest_of, run_cli, wait_until
from tests.ingress_server import spawn_ingress

SECRET = "argocd-shared-secret-91c2"
ENVIRONMENTS = """environments:
  dev:
    promote_from: build
    auto_merge: true
    live_when: healthy
  staging:
    promote_from: dev
    auto_merge: true
"""


def argocd_body(digest: str, sync: str, health: str) -> bytes:
    """What the notification template of docs/ingress.md renders for api's dev application."""
    return json.dumps(
        {
            "app": "api-dev",
            "service": "api",
            "env": "dev",
            "sync": sync,
            "health": health,
            "images": [f"{REGISTRY}/api@{digest}", "docker.io/library/nginx:1.27"],
            "revision": "4f1c2ab",
        }
    ).encode()


def explain_staging(capsys: Any) -> str:
    code, out, err = run_cli(capsys, "explain", "api", "staging", "--json")
    assert code == 0, err
    return "; ".join(json.loads(out)["reasons"])


def test_the_next_environment_follows_only_once_argo_cd_reports_the_digest_healthy(
    env: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    env.init_repo(["api"])

    def policy(clone: Path) -> None:
        text = (clone / "ferry.yaml").read_text()
        head, _, rest = text.partition("environments:\n")
        tail = rest[rest.index("\n# Approver groups") :]
        (clone / "ferry.yaml").write_text(head + ENVIRONMENTS + tail)

    env.commit_by_hand("dev is live when Argo CD says it is healthy", policy)
    env.start("gate-evaluator")
    env.start("pr-writer")
    proc, url = spawn_ingress(
        env.env(FERRY_WEBHOOK_SECRET_ARGOCD=SECRET, FERRY_CONSUMER="ingress-1"),
        env.logs / "ingress.log",
    )
    env.procs.append(proc)

    def report(digest: str, sync: str, health: str, secret: str = SECRET) -> httpx.Response:
        body = argocd_body(digest, sync, health)
        headers = {"Content-Type": "application/json"}
        headers.update(signature_headers("argocd", secret, body))
        return httpx.post(f"{url}/webhooks/argocd", content=body, headers=headers, timeout=10)

    def staging_promotions() -> list[dict[str, str]]:
        return [p for p in env.entries("promotions") if p["target_env"] == "staging"]

    d = digest_of("live-when-healthy")
    env.build("api", d, author="alice")
    env.wait_pinned("api", "dev", d)
    wanted = f"waiting for Argo CD to report api synced+healthy in dev at {d}"
    wait_until(lambda: wanted in explain_staging(capsys), 10, "explain to say what it waits for")

    # merged into dev, but Argo CD has not reported it running: staging does not follow
    assert report(d, "Synced", "Healthy", secret="not-the-secret").status_code == 401
    answer = report(d, "Synced", "Degraded")
    assert answer.status_code == 202 and answer.json()["published"] == 1
    wait_until(
        lambda: "last report: api-dev Synced, Degraded" in explain_staging(capsys),
        10,
        "the degraded report to be kept",
    )
    recorded = [a for a in env.entries("audit") if a["action"] == "deployed"]
    assert [a["outcome"] for a in recorded] == ["recorded"]
    assert staging_promotions() == []
    assert env.repo.pinned("api", "staging") is None

    # Argo CD reports it synced and healthy: the digest is live in dev, staging follows
    assert report(d, "Synced", "Healthy").status_code == 202
    env.wait_pinned("api", "staging", d, timeout=15)
    [opened] = [p for p in staging_promotions() if p["kind"] == "open"]
    assert opened["digest"] == d
