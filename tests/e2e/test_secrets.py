"""No secret leaves a process: run `ferry up` against a server that wants a password (given the
usual password-only way, redis://:PASSWORD@host), with a forge token set, push entries that carry
those secrets, use the CLI, and find neither secret in any log line, CLI output, dead letter,
audit record or other stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ferry.adapters.embedded import start_server
from ferry.adapters.scaffold import scaffold
from tests.helpers import REGISTRY, digest_of, wait_until

PASSWORD = "pw-" + uuid.uuid4().hex
TOKEN = "ghp_" + uuid.uuid4().hex
SECRETS = (PASSWORD, TOKEN)


@pytest.fixture
def guarded() -> Iterator[tuple[redis.Redis, str]]:
    """A server of this test's own that wants PASSWORD: an admin client, and the URL to give
    Ferry. (The suite's shared server stays open for every other test.)"""
    server = start_server()
    try:
        admin = redis.Redis.from_url(server.connection_url)
        admin.config_set("requirepass", PASSWORD)
        admin = redis.Redis(host="127.0.0.1", port=server.port, password=PASSWORD)
        yield admin, f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    finally:
        server.stop()


def ferry(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_no_secret_reaches_logs_cli_output_dead_letters_or_the_audit(
    guarded: tuple[redis.Redis, str], tmp_path: Path
) -> None:
    admin, url = guarded
    repo = tmp_path / "gitops"
    scaffold(repo, ["api"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env.update(
        FERRY_REDIS_URL=url,
        FERRY_FORGE_TOKEN=TOKEN,
        FERRY_HOME=str(tmp_path / "home"),
        FERRY_GITOPS_REPO=str(repo),
        FERRY_TICK_S="0.5",
    )
    outputs: list[str] = []

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        done = ferry(*args, env={**env, **extra})
        outputs.append(done.stdout + done.stderr)
        return done

    log_path = tmp_path / "up.log"
    with open(log_path, "wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "ferry", "up"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: log_path.read_text().count('"worker started"') >= 4, 60, "four workers")
        good = digest_of("guarded")
        published = cli(
            "publish", "ci", "--service", "api", "--digest", good, "--image", f"{REGISTRY}/api",
            "--url", f"https://ci:{TOKEN}@ci.example/run/1", "--author", "alice",
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        wait_until(
            lambda: json.loads(cli("status", "--json").stdout)["services"]["api"]["dev"] == good,
            60,
            "api in dev",
        )
        # Producers that put the secrets into entries, valid and not.
        ci = "ferry:ci"
        admin.xadd(ci, {"kind": "ci", "service": TOKEN, "digest": good})
        admin.xadd(ci, {"kind": "ci", "service": "api", "digest": f"sha256:{PASSWORD}"})
        admin.xadd(ci, {"kind": "ci", "service": "api", "digest": good, "env": "qa", "url": url})
        newer = digest_of("guarded-2")
        admin.xadd(ci, {"kind": "ci", "service": "api", "digest": newer, "author": PASSWORD})
        wait_until(lambda: admin.xlen("ferry:dlq") >= 3, 30, "three dead letters")
        wait_until(
            lambda: json.loads(cli("status", "--json").stdout)["services"]["api"]["dev"] == newer,
            60,
            "the build with a secret author in dev",
        )
        # The CLI, right and wrong.
        letters = json.loads(cli("dlq", "ls", "--json").stdout)
        for letter in letters:
            assert cli("dlq", "show", letter["id"]).returncode == 0
        for args in (["audit"], ["dlq", "ls"], ["pr", "ls"], ["pr", "show", "1"]):
            assert cli(*args).returncode == 0, args
        cli("explain", "api", "dev")
        wrong = cli("publish", "ci", "--service", TOKEN, "--digest", good)
        assert wrong.returncode == 2 and "service must be a DNS label" in wrong.stderr
        bogus = {"FERRY_REDIS_URL": f"rediss+bogus://:{PASSWORD}@127.0.0.1:1/0"}
        for args in (["status"], ["worker", "gate-evaluator"], ["up"]):
            done = cli(*args, **bogus)
            assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done
            assert "FERRY_REDIS_URL must start with redis://" in done.stderr
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)
    text = log_path.read_text()
    assert f"redis://***@127.0.0.1:{url.rsplit(':', 1)[1]}" in text  # the worker started lines
    assert '"event": "ferry up"' in text
    records = {
        stream: [json.dumps({k.decode(): v.decode() for k, v in fields.items()})
                 for _, fields in admin.xrange(stream)]
        for stream in ("ferry:dlq", "ferry:audit", "ferry:promotions", "ferry:changes")
    }  # fmt: skip
    assert len(records["ferry:dlq"]) == 3 and records["ferry:audit"]
    for secret in SECRETS:
        assert secret not in text, "a log line"
        for out in outputs:
            assert secret not in out, out
        for stream, entries in records.items():
            for entry in entries:
                assert secret not in entry, (stream, entry)
